/**
 * Temporary directories for tests, one way: made under the system's temp directory with
 * a prefix naming the test file, removed (with the images restored beside them,
 * `DIR-restored-*`) after each test or after the file.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, afterEach } from "vitest"

const remove = (dirs: Array<string>): void => {
  for (const dir of dirs.splice(0)) {
    fs.rmSync(dir, { recursive: true, force: true })
    const parent = path.dirname(dir)
    for (const name of fs.readdirSync(parent))
      if (name.startsWith(`${path.basename(dir)}-restored-`))
        fs.rmSync(path.join(parent, name), { recursive: true, force: true })
  }
}

const make = (dirs: Array<string>, prefix: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  dirs.push(dir)
  return dir
}

/**
 * A maker of fresh directories for one test file (call it at the top of the file): each is
 * removed after every test (`"each"`) or after the file (`"all"`, the default).
 */
export const tempDirs = (prefix: string, when: "each" | "all" = "all"): (() => string) => {
  const dirs: Array<string> = []
  ;(when === "each" ? afterEach : afterAll)(() => remove(dirs))
  return () => make(dirs, prefix)
}

/** Where a restore writes beside the receiver directory `dir` (it refuses to write inside it). */
export const restoredBeside = (dir: string, at: number | string): string => `${dir}-restored-${at}.img`

const shared: Array<string> = []
/** A fresh directory kept until `removeTempDirs` (for support modules whose callers choose when). */
export const tempDir = (prefix = "cdp-test-"): string => make(shared, prefix)
export const removeTempDirs = (): void => remove(shared)
