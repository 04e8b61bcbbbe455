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
