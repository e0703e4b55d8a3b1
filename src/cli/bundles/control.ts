/**
 * The control bundle (`dist/cli/control.cjs`): `status` and `verify`, the commands that only
 * ask a running process on its control socket. Neither the replicator, the receiver nor
 * OpenTelemetry is in it: their top-level code is what a start of the main bundle runs.
 */
import { mainOf } from "../commandLine.js"
import { status } from "../statusCommand.js"
import { verify } from "../verifyCommand.js"

export const commands = [status, verify] as const

export const main = mainOf(commands)
