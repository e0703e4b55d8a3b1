/**
 * The outside tools the interop tests drive (QEMU's, libnbd's, fio), found on PATH or in
 * the sbin directories. Under CI (env `CI` set) a missing tool fails the test: .ci/run
 * installs the Debian packages, so a missing one means the install broke. Elsewhere the
 * test is skipped with a reason that names the package to install.
 */
import * as fs from "node:fs"
import * as path from "node:path"

/** Each tool and the Debian package that carries it. */
export const packages = {
  "qemu-img": "qemu-utils",
  "qemu-io": "qemu-utils",
  "qemu-nbd": "qemu-utils",
  nbdinfo: "libnbd-bin",
  nbdcopy: "libnbd-bin",
  fio: "fio",
  "qemu-storage-daemon": "qemu-system-common",
  mke2fs: "e2fsprogs"
} as const

export type Tool = keyof typeof packages

const found = new Map<Tool, string | undefined>()

/** The tool's absolute path, or undefined when it is not installed. */
export const find = (tool: Tool): string | undefined => {
  if (found.has(tool)) return found.get(tool)
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/sbin"]
  let hit: string | undefined
  for (const dir of dirs) {
    if (dir === "") continue
    const candidate = path.join(dir, tool)
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      if (fs.statSync(candidate).isFile()) {
        hit = candidate
        break
      }
    } catch {}
  }
  found.set(tool, hit)
  return hit
}

/** Why the tools are unusable (`undefined`: all found), naming the packages to install. */
export const missing = (tools: ReadonlyArray<Tool>): string | undefined => {
  const absent = tools.filter((t) => find(t) === undefined)
  if (absent.length === 0) return undefined
  const install = [...new Set(absent.map((t) => packages[t]))].join(" ")
  return `${absent.join(", ")} not installed (Debian: apt-get install ${install})`
}

export const underCi = (): boolean => (process.env.CI ?? "") !== "" && process.env.CI !== "false"

/**
 * The tools' paths for a test. A missing tool fails the test under CI and skips it
 * elsewhere, with the reason (`ctx.skip(note)`).
 */
export const need = <const T extends Tool>(
  ctx: { readonly skip: (note?: string) => never },
  ...tools: ReadonlyArray<T>
): Record<T, string> => {
  const why = missing(tools)
  if (why !== undefined) {
    if (underCi()) throw new Error(`${why}: under CI the interop tools must be installed (.ci/run does)`)
    ctx.skip(why)
  }
  return Object.fromEntries(tools.map((t) => [t, find(t)!])) as Record<T, string>
}
