/**
 * The main bundle (`dist/cli/main.cjs`): every command (`cli.ts`), for whatever no smaller
 * bundle serves (`internal/bundles.ts`): `--help`, `simulate`, `model`, `check-trace`, an
 * unknown command. Built by scripts/bundle-cli.mjs; `main.ts` loads it.
 */
import { commands } from "./cli.js"
import { mainOf } from "./commandLine.js"

/** Runs the command `argv` names (`process.argv`: node, the script, then the arguments) until it exits. */
export const main = mainOf(commands)
