/**
 * The filter's bundle (`dist/cli/filter.cjs`): `replicate`, without the receiver's modules,
 * the NBD server, the simulator's system run and the model's tools.
 */
import { mainOf } from "../commandLine.js"
import { replicate } from "../replicatorCommands.js"

export const commands = [replicate] as const

export const main = mainOf(commands)
