/**
 * The Midge-only `cluster_*` options of a `mosquitto.conf` (checked by the
 * config schema) as `ClusterOptions`; undefined without `cluster_redis_url`.
 */
import * as os from "node:os"
import type { BrokerConfig } from "../config/Config.js"
import type { ClusterOptions } from "./Cluster.js"

export const clusterOptionsFromConfig = (config: BrokerConfig): ClusterOptions | undefined => {
  const last = (option: string): string | undefined => {
    let value: string | undefined
    for (const d of config.directives) if (d.option === option && d.args.length > 0) value = d.args[0]
    return value
  }
  const redisUrl = last("cluster_redis_url")
  if (redisUrl === undefined) return undefined
  const port = config.listeners.find((l) => l.port !== undefined && l.port > 0)?.port
  return {
    redisUrl,
    // stable across restarts when the node has a fixed port: it finds its inbox again
    nodeId: last("cluster_node_id") ?? (port !== undefined ? `${os.hostname()}-${port}` : undefined),
    keyPrefix: last("cluster_key_prefix") ?? "midge"
  }
}

const NAMES: ReadonlyArray<readonly [keyof ClusterOptions, string]> = [
  ["redisUrl", "cluster_redis_url"],
  ["nodeId", "cluster_node_id"],
  ["keyPrefix", "cluster_key_prefix"]
]

/**
 * SIGHUP: the cluster options are not reloaded (as Mosquitto leaves some
 * options to a restart): one warning per option whose value changed, naming
 * it; the running values stay.
 */
export const clusterReloadWarnings = (running: ClusterOptions | undefined, next: ClusterOptions | undefined): Array<string> => {
  if (running === undefined && next === undefined) return []
  if (running === undefined) return ["cluster_redis_url set: joining a cluster needs a restart; this node stays on its own"]
  if (next === undefined) return ["cluster_redis_url removed: leaving the cluster needs a restart; this node stays in it"]
  const warnings: Array<string> = []
  for (const [key, name] of NAMES) {
    const was = running[key]
    const now = next[key]
    if (was !== now) warnings.push(`${name} changed from ${String(was)} to ${String(now)}: needs a restart; the running value is kept`)
  }
  return warnings
}
