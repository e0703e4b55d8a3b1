/**
 * The command line's bundles (src/cli/internal/bundles.ts, scripts/bundle-cli.mjs): a start
 * runs the top-level code of every module in the bundle it loads, so each group of commands
 * has its own. Checked: which bundle a command line goes to (`--log-level` before the
 * command, options, unknown commands); each entry serves exactly the commands listed for it;
 * through the built `main.js`, a command of each bundle prints the help the main bundle
 * (every command) prints; and what loading a bundle runs: `status`/`verify`'s holds neither the
 * replicator, the receiver nor OpenTelemetry, and no bundle starts the metrics exporter's
 * HTTP server module unless `--metrics` asks for it (the old single bundle did, on every
 * start).
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { Command } from "@effect/cli"
import { HashSet } from "effect"
import { describe, expect, it } from "vitest"
import { commands as allCommands } from "../../src/cli/cli.js"
import { BUNDLES, bundleFor, commandOf, MAIN_BUNDLE } from "../../src/cli/internal/bundles.js"

const root = path.resolve(import.meta.dirname, "../..")
const cliDir = path.join(root, "dist/cli")
const run = promisify(execFile)

// biome-ignore lint/suspicious/noExplicitAny: any command
type AnyCommand = Command.Command<any, any, any, any>
const nameOf = (command: AnyCommand): string => HashSet.values(Command.getNames(command)).next().value!

const argv = (...args: Array<string>) => ["node", "cdp-sync", ...args]

describe("the command line's bundles", () => {
  it("a command line goes to the bundle that lists its command; anything else to the main one", () => {
    for (const entry of BUNDLES)
      for (const command of entry.commands) {
        expect(bundleFor(argv(command, "--json")), command).toBe(entry.bundle)
        expect(bundleFor(argv("--log-level", "debug", command)), command).toBe(entry.bundle)
        expect(bundleFor(argv("--log-level=debug", command, "--log-level", "info")), command).toBe(
          entry.bundle
        )
      }
    expect(commandOf(argv("--log-level", "debug", "verify", "--control", "x"))).toBe("verify")
    for (const other of [
      argv(),
      argv("--help"),
      argv("--version"),
      argv("-h"),
      argv("--log-level", "debug"),
      argv("--log-level", "debug", "--help", "verify"),
      argv("--json", "verify"),
      argv("verfy"),
      argv("simulate"),
      argv("model"),
      argv("check-trace", "-")
    ])
      expect(bundleFor(other), other.join(" ")).toBe(MAIN_BUNDLE)
  })

  it("each entry serves exactly the commands listed for it, each one the main bundle has too", async () => {
    const all = allCommands.map(nameOf)
    expect(new Set(all).size).toBe(all.length)
    const listed = BUNDLES.flatMap((b) => b.commands)
    expect(new Set(listed).size, "a command is listed for one bundle").toBe(listed.length)
    for (const entry of BUNDLES) {
      const module = (await import(path.join(root, "src/cli", entry.entry.replace(/\.js$/, ".ts")))) as {
        readonly main: unknown
        readonly commands?: ReadonlyArray<AnyCommand>
      }
      expect(typeof module.main, entry.entry).toBe("function")
      const served = (module.commands ?? allCommands).map(nameOf)
      expect(served, entry.entry).toEqual(entry.bundle === MAIN_BUNDLE ? all : entry.commands)
      for (const name of served) expect(all).toContain(name)
    }
  })

  it("built: a command's help, through main.js, is what the main bundle prints (one command of each bundle)", async () => {
    const viaMain = (args: ReadonlyArray<string>) =>
      run(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `const { loadCached } = await import(${JSON.stringify(path.join(cliDir, "internal/codeCache.js"))})
loadCached(${JSON.stringify(path.join(cliDir, MAIN_BUNDLE))}).exports.main(["node", "cdp-sync", ...process.argv.slice(1)])`,
          ...args
        ],
        { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } }
      )
    const routed = (args: ReadonlyArray<string>) =>
      run(process.execPath, [path.join(cliDir, "main.js"), ...args], {
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1" }
      })
    const helps = await Promise.all(
      BUNDLES.filter((b) => b.commands.length > 0).map(async (entry) => {
        expect(fs.existsSync(path.join(cliDir, entry.bundle)), entry.bundle).toBe(true)
        expect(fs.existsSync(path.join(cliDir, `${entry.bundle}.cache`)), entry.bundle).toBe(true)
        const command = entry.commands.at(-1)!
        const [mine, main] = await Promise.all([routed([command, "--help"]), viaMain([command, "--help"])])
        return { command, mine: mine.stdout, main: main.stdout }
      })
    )
    for (const { command, mine, main } of helps) {
      expect(main, command).toContain(`$ cdp-sync ${command}`)
      expect(mine, command).toBe(main)
    }
  })

  it("built: loading a bundle runs no more than its commands need", async () => {
    // The modules Node loads while each bundle's module code runs (its `main` not called).
    const { stdout } = await run(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { loadCached } = await import(${JSON.stringify(path.join(cliDir, "internal/codeCache.js"))})
const loaded = {}
for (const bundle of process.argv.slice(1)) {
  const before = new Set(process.moduleLoadList)
  loadCached(${JSON.stringify(cliDir)} + "/" + bundle)
  loaded[bundle] = process.moduleLoadList.filter((m) => !before.has(m))
}
console.log(JSON.stringify(loaded))`,
        ...BUNDLES.filter((b) => b.commands.length > 0).map((b) => b.bundle)
      ],
      { encoding: "utf8" }
    )
    const loaded = JSON.parse(stdout) as Record<string, ReadonlyArray<string>>
    for (const [bundle, modules] of Object.entries(loaded)) {
      // OpenTelemetry's Prometheus exporter and the metrics endpoint (src/adapters/Metrics.ts).
      expect(modules, bundle).not.toContain("NativeModule http")
      expect(modules, bundle).not.toContain("NativeModule _http_server")
    }
    // `status` and `verify` only ask a socket: none of the replicator, the receiver, the
    // adapters or OpenTelemetry is in their bundle (esbuild marks each module's code).
    const control = fs.readFileSync(path.join(cliDir, "control.cjs"), "latin1")
    const modules = [...control.matchAll(/^\/\/ (\S+\.c?js)$/gm)].map((m) => m[1]!)
    expect(modules.some((m) => m.startsWith("dist/cli/verifyCommand"))).toBe(true)
    const heavy = modules.filter(
      (m) =>
        m.includes("@opentelemetry/") ||
        m.startsWith("dist/adapters/") ||
        m.startsWith("dist/nbd/") ||
        m.startsWith("dist/simulator/") ||
        (m.startsWith("dist/replicator/") && m !== "dist/replicator/internal/errors.js") ||
        (m.startsWith("dist/receiver/") && !/^dist\/receiver\/internal\/(at|errors)\.js$/.test(m))
    )
    expect(heavy).toEqual([])
  })
})
