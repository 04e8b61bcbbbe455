/**
 * The Midge-only `cluster_redis_url`, `cluster_node_id`, `cluster_key_prefix`
 * options: off by default, checked with file:line errors, last one wins.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as os from "node:os"
import { clusterOptionsFromConfig } from "../../src/cluster/config.js"
import { type BrokerConfig, ConfigError, knownOptions, parseConfigText } from "../../src/config/Config.js"

const parse = (text: string): Either.Either<BrokerConfig, ConfigError> => Effect.runSync(Effect.either(parseConfigText(text, "t.conf")))

const ok = (text: string): BrokerConfig => {
  const r = parse(text)
  if (Either.isLeft(r)) throw new Error(`expected a valid config, got:\n${r.left.message}`)
  return r.right
}

const fails = (text: string): string => {
  const r = parse(text)
  if (Either.isRight(r)) throw new Error("expected a ConfigError")
  expect(r.left).toBeInstanceOf(ConfigError)
  return r.left.message
}

describe("cluster_* options (Midge-only)", () => {
  it("off by default: no cluster without cluster_redis_url", () => {
    expect(clusterOptionsFromConfig(ok("listener 1883\n"))).toBeUndefined()
    expect(clusterOptionsFromConfig(ok("listener 1883\ncluster_node_id n1\n"))).toBeUndefined()
  })

  it("cluster_redis_url joins; the node id defaults to hostname-port, the prefix to midge; no warning", () => {
    const c = ok("listener 1883\ncluster_redis_url redis://10.0.0.5:6379\n")
    expect(c.warnings).toEqual([])
    expect(clusterOptionsFromConfig(c)).toEqual({ redisUrl: "redis://10.0.0.5:6379", nodeId: `${os.hostname()}-1883`, keyPrefix: "midge" })
    const d = ok("listener 1883\ncluster_redis_url redis://a:1\ncluster_redis_url rediss://b:2/3 # tls\ncluster_node_id n-1\ncluster_key_prefix prod.mqtt\n")
    expect(clusterOptionsFromConfig(d)).toEqual({ redisUrl: "rediss://b:2/3", nodeId: "n-1", keyPrefix: "prod.mqtt" })
  })

  it("bad values are reported with file and line", () => {
    expect(fails("cluster_redis_url http://x:1\n")).toContain("t.conf:1 cluster_redis_url: invalid cluster_redis_url \"http://x:1\"")
    expect(fails("listener 1883\ncluster_redis_url\n")).toContain("t.conf:2 cluster_redis_url: missing value")
    expect(fails("cluster_node_id two words\n")).toContain("t.conf:1 cluster_node_id")
    expect(fails("cluster_key_prefix a*b\n")).toContain("t.conf:1 cluster_key_prefix: invalid value \"a*b\"")
  })

  it("are known options with status Midge-only", () => {
    for (const name of ["cluster_redis_url", "cluster_node_id", "cluster_key_prefix"]) expect(knownOptions.find((o) => o.name === name)?.status).toBe("Midge-only")
  })
})
