import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: process.env.CDP_SYNC_REPORT ? ["default", "json"] : ["default"],
    ...(process.env.CDP_SYNC_REPORT ? { outputFile: { json: process.env.CDP_SYNC_REPORT } } : {})
  }
})
