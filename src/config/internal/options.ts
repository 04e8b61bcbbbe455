/**
 * Every option Mosquitto 2.0 / 2.1 accepts in `mosquitto.conf`, built from the
 * mosquitto.conf(5) manual page plus the spellings `src/conf.c` also accepts
 * (`maximum_qos`, bridge `clientid` / `username` / `password`, `retry_interval`).
 * Anything not listed here is an unknown option, an error as in Mosquitto.
 *
 * `scope` says where an occurrence lands (conf.c's `cur_listener`,
 * `cur_security_options`, `cur_bridge`, `cur_plugin_config`):
 * - `global`: the broker.
 * - `security`: the broker, or the current listener when `per_listener_settings true`.
 * - `default-listener`: the implicit default listener (`port`, `bind_address`).
 * - `listener`: the current listener (the default listener before any `listener` line).
 * - `listener-required`: the current listener; an error before any `listener` line.
 * - `listener-start`: `listener` itself.
 * - `bridge-start` / `bridge`: `connection` starts a bridge; bridge options need one.
 * - `plugin-option`: needs a `plugin` / `auth_plugin` / `global_plugin` before it.
 * - `include`: `include_dir`.
 */
export type Scope =
  | "global"
  | "security"
  | "default-listener"
  | "listener"
  | "listener-required"
  | "listener-start"
  | "bridge-start"
  | "bridge"
  | "plugin-option"
  | "include"

/** "Midge-only": an option Mosquitto does not have (Mosquitto itself would reject it as unknown). */
export type Status = "supported" | "not yet" | "Midge-only"

export interface OptionSpec {
  readonly name: string
  readonly scope: Scope
  readonly status: Status
}

const S = "supported" as const
const N = "not yet" as const
const M = "Midge-only" as const

const spec = (name: string, scope: Scope, status: Status): OptionSpec => ({ name, scope, status })

/** In the order of the manual's sections, then Midge's own; docs/configuration.md lists the same names. */
export const optionSpecs: ReadonlyArray<OptionSpec> = [
  // General options
  spec("acl_file", "security", S),
  spec("allow_anonymous", "security", S),
  spec("allow_duplicate_messages", "global", S),
  spec("allow_zero_length_clientid", "security", S),
  spec("auth_opt_*", "plugin-option", S),
  spec("auth_plugin", "security", S),
  spec("auth_plugin_deny_special_chars", "plugin-option", S),
  spec("auto_id_prefix", "security", S),
  spec("autosave_interval", "global", S),
  spec("autosave_on_changes", "global", S),
  // broker-wide, also with per_listener_settings (as Mosquitto 2.1 documents it)
  spec("check_retain_source", "global", S),
  spec("clientid_prefixes", "global", S),
  spec("connection_messages", "global", S),
  spec("enable_control_api", "global", S),
  spec("global_max_clients", "global", S),
  spec("global_max_connections", "global", S),
  spec("global_plugin", "global", S),
  spec("include_dir", "include", S),
  spec("log_dest", "global", S),
  spec("log_facility", "global", S),
  spec("log_timestamp", "global", S),
  spec("log_timestamp_format", "global", S),
  spec("log_type", "global", S),
  spec("max_inflight_bytes", "global", S),
  spec("max_inflight_messages", "global", S),
  spec("max_keepalive", "global", S),
  spec("max_packet_size", "global", S),
  spec("max_queued_bytes", "global", S),
  spec("max_queued_messages", "global", S),
  spec("memory_limit", "global", S),
  spec("message_size_limit", "global", S),
  spec("packet_buffer_size", "global", N),
  spec("password_file", "security", S),
  spec("per_listener_settings", "global", S),
  spec("persistence", "global", S),
  spec("persistence_file", "global", S),
  spec("persistence_location", "global", S),
  spec("persistent_client_expiration", "global", S),
  spec("pid_file", "global", S),
  spec("plugin", "security", S),
  spec("plugin_opt_*", "plugin-option", S),
  spec("psk_file", "security", S),
  spec("queue_qos0_messages", "global", S),
  spec("retain_available", "global", S),
  spec("retain_expiry_interval", "global", S),
  spec("retry_interval", "global", S),
  spec("set_tcp_nodelay", "global", S),
  spec("sys_interval", "global", S),
  spec("upgrade_outgoing_qos", "global", S),
  spec("user", "global", S),
  spec("websockets_headers_size", "global", S),
  spec("websockets_log_level", "global", N),
  // Listeners: general options
  spec("accept_protocol_versions", "listener-required", S),
  spec("bind_address", "default-listener", S),
  spec("bind_interface", "listener", S),
  spec("enable_proxy_protocol", "listener-required", S),
  spec("http_dir", "listener", S),
  spec("listener", "listener-start", S),
  spec("listener_allow_anonymous", "listener-required", S),
  spec("listener_auto_id_prefix", "listener-required", S),
  spec("max_connections", "listener", S),
  spec("max_qos", "listener", S),
  spec("maximum_qos", "listener", S),
  spec("max_topic_alias", "listener", S),
  spec("max_topic_alias_broker", "listener", S),
  spec("mount_point", "listener-required", S),
  spec("port", "default-listener", S),
  spec("protocol", "listener", S),
  spec("proxy_protocol_v2_require_tls", "listener-required", S),
  spec("socket_domain", "listener", S),
  spec("use_username_as_clientid", "listener", S),
  spec("websockets_origin", "listener", S),
  // Listeners: certificate and pre-shared-key based TLS
  spec("cafile", "listener", S),
  spec("capath", "listener", S),
  spec("certfile", "listener", S),
  spec("ciphers", "listener", S),
  spec("ciphers_tls1.3", "listener", S),
  spec("crlfile", "listener", S),
  spec("dhparamfile", "listener", S),
  spec("disable_client_cert_date_checks", "listener-required", S),
  spec("keyfile", "listener", S),
  spec("psk_hint", "listener", S),
  spec("require_certificate", "listener", S),
  spec("tls_engine", "listener", N),
  spec("tls_engine_kpass_sha1", "listener", N),
  spec("tls_keyform", "listener", N),
  spec("tls_version", "listener", S),
  spec("use_identity_as_username", "listener", S),
  spec("use_subject_as_username", "listener", S),
  // Bridges
  spec("connection", "bridge-start", S),
  spec("address", "bridge", S),
  spec("addresses", "bridge", S),
  spec("bridge_attempt_unsubscribe", "bridge", S),
  spec("bridge_bind_address", "bridge", S),
  spec("bridge_max_packet_size", "bridge", S),
  spec("bridge_max_topic_alias", "bridge", S),
  spec("bridge_outgoing_retain", "bridge", S),
  spec("bridge_protocol_version", "bridge", S),
  spec("bridge_receive_maximum", "bridge", S),
  spec("bridge_reload_type", "bridge", S),
  spec("bridge_session_expiry_interval", "bridge", S),
  spec("bridge_tcp_keepalive", "bridge", S),
  spec("bridge_tcp_user_timeout", "bridge", N),
  spec("cleansession", "bridge", S),
  spec("clientid", "bridge", S),
  spec("idle_timeout", "bridge", S),
  spec("keepalive_interval", "bridge", S),
  spec("local_cleansession", "bridge", S),
  spec("local_clientid", "bridge", S),
  spec("local_password", "bridge", S),
  spec("local_username", "bridge", S),
  spec("notification_topic", "bridge", S),
  spec("notifications", "bridge", S),
  spec("notifications_local_only", "bridge", S),
  spec("password", "bridge", S),
  spec("remote_clientid", "bridge", S),
  spec("remote_password", "bridge", S),
  spec("remote_username", "bridge", S),
  spec("restart_timeout", "bridge", S),
  spec("round_robin", "bridge", S),
  spec("start_type", "bridge", S),
  spec("threshold", "bridge", S),
  spec("topic", "bridge", S),
  spec("try_private", "bridge", S),
  spec("username", "bridge", S),
  // Bridges: TLS
  spec("bridge_alpn", "bridge", S),
  spec("bridge_cafile", "bridge", S),
  spec("bridge_capath", "bridge", S),
  spec("bridge_certfile", "bridge", S),
  spec("bridge_ciphers", "bridge", S),
  spec("bridge_ciphers_tls1.3", "bridge", S),
  spec("bridge_identity", "bridge", S),
  spec("bridge_insecure", "bridge", S),
  spec("bridge_keyfile", "bridge", S),
  spec("bridge_psk", "bridge", S),
  spec("bridge_require_ocsp", "bridge", S),
  spec("bridge_tls_use_os_certs", "bridge", S),
  spec("bridge_tls_version", "bridge", S),
  // Midge-only
  spec("acl_subscribe_check", "global", M),
  spec("cluster_key_prefix", "global", M),
  spec("cluster_node_id", "global", M),
  spec("cluster_redis_url", "global", M),
  spec("metrics_listener", "global", M),
  spec("persistence_durable", "global", M),
  spec("persistence_on_corrupt", "global", M)
]

const byName: ReadonlyMap<string, OptionSpec> = new Map(optionSpecs.map((s) => [s.name, s]))
const authOpt = byName.get("auth_opt_*")!
const pluginOpt = byName.get("plugin_opt_*")!

/** The spec for an option as written in a file; `auth_opt_KEY` / `plugin_opt_KEY` match their prefix. */
export const lookupOption = (option: string): OptionSpec | undefined => {
  const found = byName.get(option)
  if (found !== undefined) return found
  // conf.c: the key after the prefix must not be empty
  if (option.length > 9 && option.startsWith("auth_opt_")) return authOpt
  if (option.length > 11 && option.startsWith("plugin_opt_")) return pluginOpt
  return undefined
}

/** Options that open a plugin, after which `plugin_opt_*` / `auth_opt_*` are valid. */
export const pluginOptions: ReadonlySet<string> = new Set(["plugin", "auth_plugin", "global_plugin"])

/**
 * The one Mosquitto plugin Midge has, built in: dynamic security, recognised by its file name
 * wherever its path points (`.so` on Linux, `.dll` on Windows, `.dylib` on macOS).
 */
export const isDynsecPlugin = (path: string): boolean => /(^|[\\/])(lib)?mosquitto_dynamic_security(\.so(\.\d+)*|\.dll|\.dylib)$/.test(path.trim())

/** Options conf.c routes through `conf__set_cur_security_options` (or sets it for global_plugin):
 * once one is seen, `per_listener_settings true` is an error. */
export const securityMarking: ReadonlySet<string> = new Set([
  "acl_file",
  "allow_anonymous",
  "allow_zero_length_clientid",
  "auth_plugin",
  "auto_id_prefix",
  "check_retain_source",
  "global_plugin",
  "password_file",
  "plugin",
  "psk_file"
])
