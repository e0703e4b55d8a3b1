import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two test files at a time even on 2 cores: most of the slow ones wait on child
    // processes, sockets and fsync rather than compute.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: process.env.CDP_SYNC_REPORT ? ["default", "json"] : ["default"],
    ...(process.env.CDP_SYNC_REPORT ? { outputFile: { json: process.env.CDP_SYNC_REPORT } } : {})
  }
})
