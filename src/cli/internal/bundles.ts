/**
 * Which bundle serves a command line (scripts/bundle-cli.mjs builds each; `main.ts` loads
 * the one `bundleFor` names). A start runs the top-level code of every module in its
 * bundle, so a command is served by the smallest bundle that holds it; the main bundle
 * holds every command and serves the rest (`--help`, `--version`, an unknown command,
 * `simulate`, `model`, `check-trace`). Each entry's module (`dist/cli/…`) exports `main`
 * over exactly the commands listed (test/cli/bundles.test.ts). Node builtins only: this
 * runs before any bundle is loaded.
 */

export interface BundleEntry {
  /** The bundle's file in dist/cli (its code cache beside it). */
  readonly bundle: string
  /** The module it is built from, in dist/cli. */
  readonly entry: string
  /** The commands it serves; empty for the main bundle (every other command line). */
  readonly commands: ReadonlyArray<string>
}

export const MAIN_BUNDLE = "main.cjs"

export const BUNDLES: ReadonlyArray<BundleEntry> = [
  { bundle: MAIN_BUNDLE, entry: "run.js", commands: [] },
  { bundle: "control.cjs", entry: "bundles/control.js", commands: ["status", "verify"] },
  { bundle: "filter.cjs", entry: "bundles/filter.js", commands: ["replicate"] },
  { bundle: "nbd.cjs", entry: "bundles/nbd.js", commands: ["serve", "mount"] },
  {
    bundle: "receiver.cjs",
    entry: "bundles/receiver.js",
    commands: ["receiver", "restore", "points", "scrub"]
  }
]

/**
 * The command `argv` (`process.argv`) names: its first argument that is neither an option
 * nor `--log-level`'s value (a global option, accepted before the command); undefined when
 * the first such argument is an option (`--help`, `--version`, …) or there is none.
 */
export const commandOf = (argv: ReadonlyArray<string>): string | undefined => {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!
    if (a === "--log-level") i++
    else if (!a.startsWith("--log-level=")) return a.startsWith("-") ? undefined : a
  }
  return undefined
}

/** The bundle that serves `argv`. */
export const bundleFor = (argv: ReadonlyArray<string>): string => {
  const command = commandOf(argv)
  return BUNDLES.find((b) => command !== undefined && b.commands.includes(command))?.bundle ?? MAIN_BUNDLE
}
