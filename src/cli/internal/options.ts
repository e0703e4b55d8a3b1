/**
 * The options the commands share, built once: sizes (one grammar, `internal/units.ts`),
 * durations, bounded integers, ports, `--seed`, `--json`, and the receiver directory's
 * `--dir`, `--disk` and `--at`. A bad value is a usage error the
 * parser reports on one line naming the option (exit 2); every default is shown in help.
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Effect, Either, Option } from "effect"
import { formatDuration, formatSize, parseDuration, parseSize } from "../../internal/units.js"
import { parseAt } from "../../receiver/internal/at.js"
import { UsageError } from "./outcome.js"

/** A usage error: @effect/cli prints it, the CLI exits 2. */
export const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

/** `description` with its default, as help shows it. */
export const described = (description: string, fallback?: string) =>
  fallback === undefined ? description : `${description} (default: ${fallback})`

/** `text` as a size for `--name`, or a usage error naming the option. */
export const sizeValue = (name: string) => (text: string) =>
  Either.match(parseSize(text), {
    onLeft: (e) => Effect.fail(invalid(`--${name} ${e.message}`)),
    onRight: (bytes) => Effect.succeed(bytes)
  })

/** A size in bytes (`4096`, `64KiB`, `64m`, `1G`, …); the default is shown as a size. */
export const size = (name: string, fallback: number, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("SIZE"),
    Options.withDefault(formatSize(fallback)),
    Options.mapEffect(sizeValue(name)),
    Options.withDescription(described(description, formatSize(fallback)))
  )

/** A text option that may be left out. */
export const optionalText = (name: string, description: string) =>
  Options.text(name).pipe(Options.optional, Options.withDescription(description))

/** A size that may be left out. */
export const optionalSize = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("SIZE"),
    Options.optional,
    Options.mapEffect((text) =>
      Option.isNone(text)
        ? Effect.succeed(Option.none<number>())
        : Effect.map(sizeValue(name)(text.value), Option.some)
    ),
    Options.withDescription(description)
  )

/** `text` as a duration (milliseconds) for `--name`, or a usage error naming the option. */
export const durationValue = (name: string) => (text: string) =>
  Either.match(parseDuration(text), {
    onLeft: (e) => Effect.fail(invalid(`--${name} ${e.message}`)),
    onRight: (millis) => Effect.succeed(millis)
  })

/** A duration in milliseconds (`500ms`, `2s`, `5m`; a bare number is milliseconds). */
export const duration = (
  name: string,
  fallback: number,
  description: string,
  aliases: ReadonlyArray<string> = []
) =>
  aliases
    .reduce((o, alias) => Options.withAlias(o, alias), Options.text(name))
    .pipe(
      Options.withPseudoName("DURATION"),
      Options.withDefault(formatDuration(fallback)),
      Options.mapEffect(durationValue(name)),
      Options.withDescription(described(description, formatDuration(fallback)))
    )

/** A duration that may be left out. */
export const optionalDuration = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.optional,
    Options.mapEffect((text) =>
      Option.isNone(text)
        ? Effect.succeed(Option.none<number>())
        : Effect.map(durationValue(name)(text.value), Option.some)
    ),
    Options.withDescription(description)
  )

export interface Bounds {
  readonly min?: number
  readonly max?: number
}

const expected = ({ min, max }: Bounds) =>
  min !== undefined && max !== undefined
    ? `expected an integer from ${min} to ${max}`
    : min !== undefined
      ? min === 1
        ? "expected a positive integer"
        : `expected an integer of at least ${min}`
      : max !== undefined
        ? `expected an integer of at most ${max}`
        : "expected an integer"

/** `n` within `bounds` for `--name`, or a usage error naming the option. */
export const bounded = (name: string, bounds: Bounds) => (n: number) =>
  Number.isSafeInteger(n) &&
  (bounds.min === undefined || n >= bounds.min) &&
  (bounds.max === undefined || n <= bounds.max)
    ? Effect.succeed(n)
    : Effect.fail(invalid(`--${name} ${n}: ${expected(bounds)}`))

/** An integer with a default, within `bounds` (default: at least 0). */
export const integer = (name: string, fallback: number, description: string, bounds: Bounds = { min: 0 }) =>
  Options.integer(name).pipe(
    Options.withDefault(fallback),
    Options.mapEffect(bounded(name, bounds)),
    Options.withDescription(described(description, String(fallback)))
  )

/** A bound: a positive integer, or the parser reports the option. */
export const positive = (name: string, fallback: number, description: string) =>
  integer(name, fallback, description, { min: 1 })

/** A positive integer that may be left out. */
export const optionalPositive = (name: string, description: string) =>
  Options.integer(name).pipe(
    Options.withPseudoName("N"),
    Options.optional,
    Options.mapEffect((n) =>
      Option.isNone(n) ? Effect.succeed(n) : Effect.map(bounded(name, { min: 1 })(n.value), Option.some)
    ),
    Options.withDescription(description)
  )

/** A TCP port, 0 … 65535 (0: the system picks a free one). */
export const port = (name: string, description: string) =>
  Options.integer(name).pipe(
    Options.withPseudoName("PORT"),
    Options.mapEffect(bounded(name, { min: 0, max: 65535 })),
    Options.withDescription(description)
  )

/** `HOST:PORT` (`[::1]:PORT` for IPv6), the port 0 … 65535 → its parts. */
export const parseHostPort = (text: string): { readonly host: string; readonly port: number } | undefined => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text)
  const port = m === null ? Number.NaN : Number(m[3])
  if (m === null || !Number.isInteger(port) || port < 0 || port > 65535) return undefined
  return { host: m[1] ?? (m[2] === "" ? "127.0.0.1" : m[2]!), port }
}

/** `HOST:PORT`, checked when parsed. */
export const hostPort = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("HOST:PORT"),
    Options.mapEffect((text) => {
      const parsed = parseHostPort(text)
      return parsed === undefined
        ? Effect.fail(
            invalid(`--${name} ${JSON.stringify(text)}: expected HOST:PORT with a port from 0 to 65535`)
          )
        : Effect.succeed(parsed)
    }),
    Options.withDescription(description)
  )

/** Text of 1 … `maxLength` characters. */
export const name = (option: string, fallback: string, description: string, maxLength: number) =>
  Options.text(option).pipe(
    Options.withDefault(fallback),
    Options.mapEffect((text) =>
      text.length >= 1 && text.length <= maxLength
        ? Effect.succeed(text)
        : Effect.fail(
            invalid(
              `--${option} ${JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)}: expected 1 to ${maxLength} characters, not ${text.length}`
            )
          )
    ),
    Options.withDescription(described(description, fallback))
  )

export const seed = (description: string, fallback = 1) => integer("seed", fallback, description, {})

export const json = (
  description = 'Print one JSON object on stdout, nothing else; a failure too: {"error": {"_tag", "message"}}'
) => Options.boolean("json").pipe(Options.withDescription(description))

/** `--dir`: a receiver directory. */
export const receiverDir = Options.text("dir").pipe(
  Options.withDescription("The receiver directory: one subdirectory per protected disk")
)

/** `--disk`: a disk of a receiver directory. */
export const diskOption = Options.text("disk").pipe(
  Options.optional,
  Options.withDescription("The disk id (may be left out when the directory holds one disk)")
)

/** `--at`: a recovery point, parsed (`points`, `restore`, `mount`). */
export const at = Options.text("at").pipe(
  Options.mapEffect((text) => Effect.mapError(parseAt(text), (e) => invalid(e.message))),
  Options.withDescription(
    "The recovery point: a seq (see `points`), `latest`, an ISO 8601 time or a relative one (-15m, -2h, -1d): the newest point at or before it"
  )
)

const DEFAULT_NBD_LISTEN = "127.0.0.1:10809"

/**
 * Where an NBD front end listens and what it calls its export (`serve`, `mount`):
 * `--listen HOST:PORT` or `--socket PATH`, and `--export-name` (default: `exportDefault`).
 */
export const nbdListenOptions = (exportDefault: string) => ({
  listen: hostPort(
    "listen",
    `Serve NBD on TCP HOST:PORT (default: ${DEFAULT_NBD_LISTEN}; port 0 picks a free one)`
  ).pipe(Options.optional),
  socket: Options.text("socket").pipe(
    Options.optional,
    Options.withDescription("Serve NBD on this unix socket instead of TCP")
  ),
  exportName: Options.text("export-name").pipe(
    Options.optional,
    Options.withDescription(
      described('The export\'s name (clients asking for the default export "" get it too)', exportDefault)
    )
  )
})

/** The address `nbdListenOptions` name; both `--listen` and `--socket` is a usage error (exit 2). */
export const nbdListenOf = (o: {
  readonly listen: Option.Option<{ readonly host: string; readonly port: number }>
  readonly socket: Option.Option<string>
}): Effect.Effect<
  { readonly host: string; readonly port: number } | { readonly path: string },
  UsageError
> =>
  Option.isSome(o.listen) && Option.isSome(o.socket)
    ? Effect.fail(new UsageError({ detail: "give --listen or --socket, not both" }))
    : Effect.succeed(
        Option.isSome(o.socket)
          ? { path: o.socket.value }
          : Option.getOrElse(o.listen, () => parseHostPort(DEFAULT_NBD_LISTEN)!)
      )
