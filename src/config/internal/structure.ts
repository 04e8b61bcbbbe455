/**
 * Directives -> sections, the order-dependent part of conf.c: which listener
 * an option belongs to, `per_listener_settings`, the default listener, the
 * local-only mode of Mosquitto 2, and the checks conf.c makes from position
 * alone (mount_point before any listener, bridge options without `connection`,
 * `plugin_opt_*` without a plugin, `per_listener_settings` after a security
 * option). Values are checked in the Schema pass, but for the plugin options, which no section
 * carries: `auth_plugin_deny_special_chars` is checked here as the boolean it is.
 */
import { Either } from "effect"
import type { Directive, Problem } from "./lexer.js"
import { isDynsecPlugin, lookupOption, pluginOptions, securityMarking } from "./options.js"
import { boolCheck, type RawInput, type Section } from "./schema.js"

export interface Structured {
  readonly raw: RawInput
  readonly problems: ReadonlyArray<Problem>
  readonly warnings: ReadonlyArray<Problem>
  /** no `listener`, `port` or `bind_address`: Mosquitto 2 listens on loopback only */
  readonly localOnly: boolean
  /** an option Midge does not support yet was set on the default listener (conf.c would create it) */
  readonly defaultListenerTouched: boolean
  /** listeners (by index; -1 is the default listener) whose protocol Midge does not serve yet */
  readonly skippedListeners: ReadonlySet<number>
  /** with per_listener_settings true, security options given before any `listener` line */
  readonly securityOnDefaultListener: ReadonlyArray<Directive>
  /** the first listener option (other than port / bind_address) given before any `listener` line */
  readonly firstOnDefaultListener: Directive | undefined
}

const NOT_YET = "not supported yet by Midge"

/** listener options that only matter on a TLS listener */
const tlsOnlyOptions = ["cafile", "capath", "crlfile", "require_certificate", "tls_version", "ciphers", "ciphers_tls1.3", "use_identity_as_username", "use_subject_as_username", "dhparamfile", "disable_client_cert_date_checks"]

/** listener options a PROXY v2 header satisfies (transport/proxyProtocol.ts `admit`) */
const proxyTlsOptions = ["require_certificate", "use_identity_as_username", "use_subject_as_username"]

/** a boolean option's directive says true (conf.c takes 1 too) */
const isTrue = (d: Directive): boolean => d.args[0] === "true" || d.args[0] === "1"

const push = (section: Section, d: Directive): void => {
  const list = section[d.option]
  if (list === undefined) section[d.option] = [d]
  else list.push(d)
}

const problem = (d: Directive, message: string): Problem => ({ file: d.file, line: d.line, option: d.option, message })

export const structure = (directives: ReadonlyArray<Directive>): Structured => {
  const global: Section = {}
  const defaultListener: Section = {}
  const listeners: Array<Section> = []
  const problems: Array<Problem> = []
  const warnings: Array<Problem> = []
  const skippedListeners = new Set<number>()
  const securityOnDefaultListener: Array<Directive> = []

  let localOnly = true
  let perListener = false
  let sawSecurity = false
  let sawPlugin = false
  let inBridge = false
  let defaultListenerTouched = false
  let current: Section | undefined // undefined: the default listener
  let firstOnDefaultListener: Directive | undefined
  let firstListenerOptionOnDefault: Directive | undefined

  for (const d of directives) {
    const spec = lookupOption(d.option)
    if (spec === undefined) {
      problems.push(
        problem(
          d,
          d.option.startsWith("#")
            ? "unknown option: a comment must have # as the very first character of the line"
            : "unknown option"
        )
      )
      continue
    }
    if (securityMarking.has(spec.name)) sawSecurity = true
    if (pluginOptions.has(spec.name)) sawPlugin = true

    // checks conf.c makes from position alone, for supported and unsupported options alike
    if (spec.scope === "listener-required" && listeners.length === 0) {
      problems.push(problem(d, "a listener must be defined before this option"))
      continue
    }
    if (spec.scope === "bridge" && !inBridge) {
      problems.push(problem(d, "invalid bridge configuration: this option must follow a connection line"))
      continue
    }
    if (spec.scope === "plugin-option" && !sawPlugin) {
      problems.push(problem(d, "this option must follow a plugin line"))
      continue
    }
    // conf.c reads it with conf__parse_bool; it only ever applies to plugins of version 2 to 4, which
    // Midge cannot load (Mosquitto's version 5 plugins, dynamic security among them, are not checked)
    if (d.option === "auth_plugin_deny_special_chars") {
      const value = boolCheck(d)
      if (Either.isLeft(value)) {
        problems.push(problem(d, value.left))
        continue
      }
    }
    if (spec.scope === "bridge-start") {
      if (d.args.length === 0) {
        problems.push(problem(d, "missing bridge name"))
        continue
      }
      inBridge = true
    }
    if (spec.scope === "listener-start") localOnly = false

    // a plugin Midge cannot load is refused, as Mosquitto refuses to start without a plugin it was given;
    // the dynamic security plugin is built in, whichever of plugin / auth_plugin / global_plugin names it
    if (pluginOptions.has(spec.name)) {
      if (!isDynsecPlugin(d.value)) {
        problems.push(
          problem(d, "cannot be loaded: Midge has Mosquitto's dynamic security plugin built in and loads no other plugin (authentication and authorisation plug in as services of an embedding application)")
        )
        continue
      }
      // auth_plugin / global_plugin (otherwise not yet): read from the directives by src/security/DynamicSecurity
      if (spec.name !== "plugin") continue
    }

    if (spec.status === "not yet") {
      warnings.push(problem(d, NOT_YET))
      if (spec.scope === "listener" && current === undefined) {
        defaultListenerTouched = true
        firstOnDefaultListener ??= d
      }
      continue
    }

    switch (spec.scope) {
      case "include":
        // spliced in by the lexer
        break
      case "listener-start":
        current = { listener: [d] }
        listeners.push(current)
        break
      case "default-listener":
        // conf.c: `port` and `bind_address` configure the default listener and leave local-only mode
        localOnly = false
        if (d.option === "port" && defaultListener.port !== undefined) {
          warnings.push(problem(d, "default listener port specified multiple times: only the latest will be used"))
        }
        warnings.push(problem(d, "deprecated in Mosquitto 2: use listener instead"))
        push(defaultListener, d)
        break
      case "listener":
      case "listener-required":
        if (d.option === "protocol" && (d.args[0] === "http_api" || d.args[0] === "quic")) {
          skippedListeners.add(listeners.length - 1)
          warnings.push(problem(d, `protocol ${d.args[0]} is ${NOT_YET}: this listener is not opened`))
          break
        }
        if (current === undefined) {
          firstOnDefaultListener ??= d
          firstListenerOptionOnDefault ??= d
        }
        push(current ?? defaultListener, d)
        break
      case "security":
        if (perListener) {
          if (current === undefined) {
            securityOnDefaultListener.push(d)
            firstOnDefaultListener ??= d
          }
          push(current ?? defaultListener, d)
        } else {
          push(global, d)
        }
        break
      case "global":
        if (d.option === "per_listener_settings") {
          if (perListener) {
            // conf.c: "Once this is set, don't let it be unset."
            warnings.push(problem(d, "ignored: per_listener_settings is already true"))
            break
          }
          const on = isTrue(d)
          if (on && sawSecurity) {
            problems.push(problem(d, "per_listener_settings must be set before any other security settings"))
            break
          }
          perListener = on
        }
        // conf.c of Mosquitto 2: "Warning: The retry_interval option is no longer available."; nothing else
        if (d.option === "retry_interval") {
          warnings.push(problem(d, "no longer available: Mosquitto 2 removed it and ignores it, as Midge does"))
          break
        }
        if (d.option === "log_dest" && (d.args[0] === "dlt" || d.args[0] === "android")) {
          warnings.push(problem(d, `log_dest ${d.args[0]} is ${NOT_YET}`))
          break
        }
        push(global, d)
        break
      default:
        // bridge options are decoded by src/bridge from the directives ("not yet" ones were reported above)
        // plugin options: the built-in dynamic security reads them (and warns about other plugins)
        if (spec.scope !== "bridge" && spec.scope !== "bridge-start" && spec.scope !== "plugin-option") warnings.push(problem(d, NOT_YET))
    }
  }

  // conf.c leaves a listener plain unless it has a certfile and keyfile (or a psk_hint): a key without
  // its certificate is refused (as net__tls_server_ctx does for one without the other), and TLS
  // options on a plain listener are named, since they would be dropped
  const tlsSections = localOnly ? listeners : [...listeners, defaultListener]
  for (const section of tlsSections) {
    const certfile = section.certfile?.[0]
    const keyfile = section.keyfile?.[0]
    if ((certfile === undefined) !== (keyfile === undefined)) {
      problems.push(problem((certfile ?? keyfile)!, "both certfile and keyfile must be provided if one of them is set"))
    } else if (certfile === undefined && section.psk_hint === undefined) {
      // behind a PROXY v2 proxy these are the header's rules (checked below)
      const proxied = section.enable_proxy_protocol !== undefined
      for (const option of tlsOnlyOptions) {
        if (proxied && proxyTlsOptions.includes(option)) continue
        for (const d of section[option] ?? []) warnings.push(problem(d, "has no effect: this listener has no certfile and keyfile, nor psk_hint, so it is not TLS"))
      }
    }
  }
  // Mosquitto 2.1's PROXY protocol (conf.c config__check_proxy): the proxy terminates TLS, so the
  // listener has none of its own; the header's TLS information is PROXY v2's only
  for (const section of listeners) {
    const enable = section.enable_proxy_protocol
    const proxyLine = enable?.[enable.length - 1]
    if (proxyLine === undefined) {
      for (const d of section.proxy_protocol_v2_require_tls ?? []) {
        if (isTrue(d)) warnings.push(problem(d, "has no effect without enable_proxy_protocol 2"))
      }
      continue
    }
    const at = `${proxyLine.file}:${proxyLine.line}`
    for (const option of ["certfile", "keyfile", "psk_hint"]) {
      for (const d of section[option] ?? []) problems.push(problem(d, `cannot be used with enable_proxy_protocol (${at}): the proxy terminates TLS, the listener must not`))
    }
    for (const d of section.use_subject_as_username ?? []) {
      if (isTrue(d)) problems.push(problem(d, `cannot be used with enable_proxy_protocol (${at}): the PROXY header carries the certificate's CN, not its subject`))
    }
    if (proxyLine.args[0] === "1") {
      for (const option of ["require_certificate", "use_identity_as_username", "proxy_protocol_v2_require_tls"]) {
        for (const d of section[option] ?? []) {
          if (isTrue(d)) warnings.push(problem(d, "has no effect with enable_proxy_protocol 1: a PROXY v1 header carries no TLS information"))
        }
      }
    }
  }
  // local-only mode (no listener, port or bind_address line): the loopback listeners have the defaults
  if (localOnly && firstListenerOptionOnDefault !== undefined) {
    warnings.push(
      problem(
        firstListenerOptionOnDefault,
        "has no effect: without a listener line Midge, as Mosquitto 2, listens on the loopback only, with the default listener settings"
      )
    )
  }

  return {
    raw: { global, defaultListener, listeners },
    problems,
    warnings,
    localOnly,
    defaultListenerTouched,
    skippedListeners,
    securityOnDefaultListener,
    firstOnDefaultListener
  }
}
