/**
 * The NBD servers' bundle (`dist/cli/nbd.cjs`): `serve` (the filter as a disk) and `mount`
 * (a recovery point as a disk), which share the NBD server and the receiver's overlay.
 */
import { mainOf } from "../commandLine.js"
import { mount } from "../mountCommand.js"
import { serve } from "../serveCommand.js"

export const commands = [serve, mount] as const

export const main = mainOf(commands)
