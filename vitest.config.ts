import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    poolOptions: {
      // One worker process runs the files one after another (two cores: vitest starts one worker
      // either way) and keeps its loaded modules between them. Isolated, each file loaded effect,
      // mqtt and the broker again: 199 s of a 937 s run went to that, against 12 s of 620 s
      // without it (docs/architecture.md, "Tests"). Tests therefore leave no global state behind:
      // brokers, sockets, child processes and process listeners live in each test's scope.
      forks: { isolate: false }
    },
    reporters: ["default"]
  }
})
