/**
 * An application outside the repository, built from the packed tarball and the docs
 * alone (issue 14): `npm pack`, unpack it as the app's `node_modules/cdp-sync` (the
 * peer dependencies come from this checkout's install, as the app's own would), then
 * typecheck an app assembled from docs/replicator.md and docs/receiver.md under
 * `strict` and `exactOptionalPropertyTypes` (optional options passed as `undefined`
 * must be accepted), compile it and run it: a receiver in-process, a replicator
 * writing through the file layers and TCP, then `points`, `restore` and `verify`.
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")
const work = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-sync-packed-app-"))
afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

const tsc = path.join(root, "node_modules/typescript/bin/tsc")

const app = `
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Either, Layer } from "effect"
import { NodeRuntime } from "@effect/platform-node"
import { ActivityLog, EventJournal, LogReceiver, VirtualDisk } from "cdp-sync/adapters"
import { Config } from "cdp-sync/domain"
import { Replicator } from "cdp-sync/replicator"
import * as Receiver from "cdp-sync/receiver"

const here = process.argv[2]!
const backup = path.join(here, "backup")

const program = Effect.scoped(
  Effect.gen(function* () {
    const server = yield* Receiver.ReceiverService.serve({
      dir: backup,
      host: "127.0.0.1",
      port: 0,
      segmentBytes: undefined,
      retain: undefined
    })
    const config = Either.getOrThrow(Config.make({ blockCount: 256, blockSize: 65536 }))
    const ReplicatorLive = Replicator.layer({ diskId: "vm1", config }).pipe(
      Layer.provide(
        Layer.mergeAll(
          VirtualDisk.layerFile({ path: path.join(here, "disk.img"), geometry: config, create: true }),
          EventJournal.layerFile({ directory: path.join(here, "journal") }),
          ActivityLog.layerFile({ directory: path.join(here, "journal") }),
          LogReceiver.layerTcp({ host: "127.0.0.1", port: server.port })
        )
      )
    )
    yield* Effect.gen(function* () {
      const replicator = yield* Replicator.Replicator
      for (let i = 0; i < 64; i++)
        yield* replicator.write(i * 65536 * 3, new Uint8Array(4096 * (1 + (i % 4))).fill(1 + i))
      yield* replicator.writeAll([
        { offset: 8192, bytes: new Uint8Array(4096).fill(200) },
        { offset: 65536, bytes: new Uint8Array(512).fill(201) }
      ])
      yield* replicator.flush
      yield* replicator.quiesce
    }).pipe(Effect.provide(ReplicatorLive))

    const [vm1] = yield* Receiver.points(backup, "vm1")
    const restored = path.join(here, "restored.img")
    yield* Receiver.restore({ dir: backup, diskId: "vm1", at: "latest", out: restored, force: undefined })
    const verified = yield* Receiver.verify({ dir: backup, diskId: "vm1", at: "latest", image: path.join(here, "disk.img") })
    const same = Buffer.compare(fs.readFileSync(restored), fs.readFileSync(path.join(here, "disk.img"))) === 0
    const scrubbed = yield* Receiver.Scrub.scrub(backup)
    console.log(JSON.stringify({ points: vm1?.points.length ?? 0, equal: verified.equal, same, clean: scrubbed.clean }))
  })
)

NodeRuntime.runMain(program)
`

describe("an application outside the repository, from the packed tarball", () => {
  it("typechecks under strict and exactOptionalPropertyTypes, runs the receiver in-process, lists points, restores and verifies", () => {
    const packed = execFileSync("npm", ["pack", "--ignore-scripts", "--silent", "--pack-destination", work], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"]
    })
      .trim()
      .split("\n")
      .at(-1)!
    const appDir = path.join(work, "app")
    const installed = path.join(appDir, "node_modules/cdp-sync")
    fs.mkdirSync(installed, { recursive: true })
    execFileSync("tar", ["-xzf", path.join(work, packed), "-C", installed, "--strip-components=1"])
    // What the tarball ships: the build, its declarations, the docs and the licence; no sources or tests.
    expect(fs.existsSync(path.join(installed, "dist/receiver/index.d.ts"))).toBe(true)
    expect(fs.existsSync(path.join(installed, "LICENSE"))).toBe(true)
    expect(fs.existsSync(path.join(installed, "docs/receiver.md"))).toBe(true)
    expect(fs.existsSync(path.join(installed, "test"))).toBe(false)
    // The command line's bundles and their code caches, but not their source maps (12 MB each).
    for (const bundle of ["main.cjs", "control.cjs", "filter.cjs", "nbd.cjs", "receiver.cjs"]) {
      expect(fs.existsSync(path.join(installed, "dist/cli", bundle)), bundle).toBe(true)
      expect(fs.existsSync(path.join(installed, "dist/cli", `${bundle}.cache`)), bundle).toBe(true)
      expect(fs.existsSync(path.join(installed, "dist/cli", `${bundle}.map`)), bundle).toBe(false)
    }
    // What \`npm install\` would put beside it: its dependencies and peers, from this checkout.
    const manifest = JSON.parse(fs.readFileSync(path.join(installed, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>
      peerDependencies?: Record<string, string>
    }
    for (const name of Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })) {
      const link = path.join(appDir, "node_modules", name)
      fs.mkdirSync(path.dirname(link), { recursive: true })
      fs.symlinkSync(path.join(root, "node_modules", name), link)
    }
    // The package's bin from the install (its dependencies beside it): a command of a small
    // bundle, and the main one's help.
    const bin = (...args: Array<string>) =>
      spawnSync(process.execPath, [path.join(installed, "bin/cdp-sync.js"), ...args], { encoding: "utf8" })
    const status = bin("status", "--control", path.join(work, "none.sock"))
    expect([status.status, status.stderr.trim()]).toEqual([
      1,
      `cdp-sync status: nothing answers on ${path.join(work, "none.sock")}: ENOENT`
    ])
    expect(bin("--help").stdout).toContain("$ cdp-sync")
    fs.writeFileSync(
      path.join(appDir, "package.json"),
      JSON.stringify({ name: "app", private: true, type: "module" })
    )
    fs.writeFileSync(
      path.join(appDir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          types: ["node"],
          typeRoots: [path.join(root, "node_modules/@types")],
          // @effect/platform-node's declarations name \`ws\` without its types (not ours to
          // fix), so declaration files are not checked on their own; every use the app makes
          // of this package's is.
          skipLibCheck: true,
          outDir: "out"
        },
        files: ["app.ts"]
      })
    )
    fs.writeFileSync(path.join(appDir, "app.ts"), app)

    execFileSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: appDir, stdio: "inherit" })
    const runDir = path.join(work, "run")
    fs.mkdirSync(runDir)
    const out = execFileSync(process.execPath, [path.join(appDir, "out/app.js"), runDir], {
      cwd: appDir,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      timeout: 120_000
    })
    const report = JSON.parse(out.trim().split("\n").at(-1)!) as Record<string, unknown>
    expect(report).toEqual({ points: expect.any(Number), equal: true, same: true, clean: true })
    expect(report.points as number).toBeGreaterThan(0)
  }, 180_000)
})
