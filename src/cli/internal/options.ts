/**
 * The options the commands share, built once: sizes (one grammar, `internal/units.ts`),
 * integers with a default, positive bounds, `--seed`, `--json`. A bad value is a usage
 * error the parser reports naming the option (exit 2).
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Effect, Either, Option } from "effect"
import { formatSize, parseSize } from "../../internal/units.js"

/** A usage error: @effect/cli prints it, the CLI exits 2. */
export const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

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
    Options.withDescription(description)
  )

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

export const integer = (name: string, fallback: number, description: string) =>
  Options.integer(name).pipe(Options.withDefault(fallback), Options.withDescription(description))

/** A bound: a positive integer, or the parser reports the option. */
export const positive = (name: string, fallback: number, description: string) =>
  Options.integer(name).pipe(
    Options.withDefault(fallback),
    Options.mapEffect((n) =>
      Number.isSafeInteger(n) && n >= 1
        ? Effect.succeed(n)
        : Effect.fail(invalid(`--${name} ${n}: expected a positive integer`))
    ),
    Options.withDescription(description)
  )

export const seed = (description: string, fallback = 1) => integer("seed", fallback, description)

export const json = (description = "Print one JSON object on stdout, nothing else") =>
  Options.boolean("json").pipe(Options.withDescription(description))
