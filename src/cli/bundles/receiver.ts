/**
 * The receiver's bundle (`dist/cli/receiver.cjs`): `receiver`, `restore`, `points` and
 * `scrub`, without the replicator, the NBD server, the simulator and the model's tools.
 */
import { mainOf } from "../commandLine.js"
import { points, receiver, restore, scrub } from "../receiverCommands.js"

export const commands = [receiver, restore, points, scrub] as const

export const main = mainOf(commands)
