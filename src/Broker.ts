/**
 * The Midge broker as an Effect service: `Broker.layer(options)` runs the
 * listeners in the layer's scope; the service publishes and subscribes
 * in-process. Embedding:
 *
 * ```ts
 * const program = Effect.gen(function* () {
 *   const broker = yield* Broker
 *   yield* broker.publish({ topic: "greetings", payload: "hello", retain: true })
 * })
 * program.pipe(Effect.provide(Broker.layer({ listeners: [{ port: 1883 }] })))
 * ```
 */
import { Context, Effect, ExecutionStrategy, Exit, FiberHandle, FiberMap, Layer, Option, Scope, Stream } from "effect"
import type { BrokerConfig } from "./config/Config.js"
import { Log, silentLog } from "./log/Log.js"
import { validateTopicFilter, validateTopicName } from "./protocol/topic.js"
import { hasForbiddenCodePoint } from "./protocol/utf8.js"
import { bridgeNameOfSessionKey, Persistence, type PersistenceService, type StoreError } from "./persistence/Persistence.js"
import { Authentication, Authorization } from "./security/Auth.js"
import { type ListenerInfo, registerBrokerControl } from "./security/brokerControl.js"
import { makeAuthHook } from "./security/connectAuth.js"
import { EnhancedAuthentication } from "./security/EnhancedAuth.js"
import type { Subscriber, SubscriptionOptions } from "./routing/Router.js"
import { Core, defaultSettings, type CoreSettings, type Stats } from "./session/Core.js"
import { Message, type MessageProperties, type QoS } from "./session/Message.js"
import { runEvery } from "./runtime/periodic.js"
import { expiryFiber, ListenError, listenerKey, listenTcp, type BoundListener, type ListenerOptions } from "./transport/Listener.js"
import { isTlsListener } from "./transport/tls.js"
import { Session } from "./session/Session.js"
import type { InflightEntry, Outgoing } from "./session/OutboundFlow.js"
import { isPacketId } from "./session/PacketIdMap.js"
import * as Cluster from "./cluster/Cluster.js"

export interface BrokerOptions {
  /** TCP listeners; port 0 picks a free port (see `Broker.listeners`) */
  readonly listeners?: ReadonlyArray<
    ListenerOptions & {
      /** a listener that may fail to bind (Mosquitto's loopback ::1 on a host without IPv6): logged and skipped */
      readonly optional?: boolean
    }
  >
  readonly settings?: Partial<CoreSettings>
  /** where log lines go; default: none */
  readonly log?: Log
  /** Midge-only: join a cluster of Midge nodes through Redis (docs/cluster.md); default: a single node */
  readonly cluster?: Cluster.ClusterOptions
}

/** The broker options a `mosquitto.conf` (see config/Config.ts) asks for. */
export const brokerOptionsFromConfig = (config: BrokerConfig, log?: Log): BrokerOptions => {
  return {
  listeners: config.listeners.map((l) => ({
      protocol: l.protocol,
      // psk_file: the broker's, or the listener's own with per_listener_settings (config/Config.ts)
      tls: l.tls,
      httpDir: l.httpDir,
      port: l.port,
      host: l.bindAddress,
      socketPath: l.socketPath,
      socketDomain: l.socketDomain,
      bindInterface: l.bindInterface,
      maxConnections: l.maxConnections,
      acceptProtocolVersions: l.acceptProtocolVersions,
      mountPoint: l.mountPoint,
      maxQos: l.maxQos,
      // per_listener_settings: the listener's own values (undefined falls back to the global ones)
      allowAnonymous: l.allowAnonymous,
      allowZeroLengthClientid: l.allowZeroLengthClientid,
      autoIdPrefix: l.autoIdPrefix,
      // websockets_headers_size is global in Mosquitto: every WebSocket listener gets it
      websocketsHeadersSize: config.websocketsHeadersSize > 0 ? config.websocketsHeadersSize : undefined,
      maxTopicAlias: l.maxTopicAlias,
      maxTopicAliasBroker: l.maxTopicAliasBroker,
      websocketsOrigins: l.websocketsOrigins,
      useUsernameAsClientid: l.useUsernameAsClientid,
      // enable_proxy_protocol (Mosquitto 2.1): connections start with a PROXY header
      proxy: l.proxy,
      optional: l.bindOptional
    })),
  settings: {
    maxInflightMessages: config.maxInflightMessages,
    maxQueuedMessages: config.maxQueuedMessages,
    queueQos0Messages: config.queueQos0Messages,
    maxInflightBytes: config.maxInflightBytes,
    maxQueuedBytes: config.maxQueuedBytes,
    upgradeOutgoingQos: config.upgradeOutgoingQos,
    allowDuplicateMessages: config.allowDuplicateMessages,
    persistentClientExpiration: config.persistentClientExpiration,
    memoryLimit: config.memoryLimit,
    checkRetainSource: config.checkRetainSource,
    maxKeepalive: config.maxKeepalive,
    maxPacketSize: config.maxPacketSize,
    messageSizeLimit: config.messageSizeLimit,
    allowZeroLengthClientid: config.allowZeroLengthClientid,
    autoIdPrefix: config.autoIdPrefix,
    retainAvailable: config.retainAvailable,
    allowAnonymous: config.allowAnonymous,
    setTcpNodelay: config.setTcpNodelay,
    connectionMessages: config.connectionMessages,
    globalMaxConnections: config.globalMaxConnections,
    globalMaxClients: config.globalMaxClients,
    retainExpiryInterval: config.retainExpiryInterval,
    enableControlApi: config.enableControlApi
  },
  ...(log !== undefined ? { log } : {})
  }
}

/** A message as an in-process subscriber receives it. */
export interface ReceivedMessage {
  readonly topic: string
  readonly payload: Buffer
  readonly qos: QoS
  readonly retain: boolean
  readonly properties: MessageProperties | undefined
}

export interface PublishInput {
  readonly topic: string
  readonly payload: string | Uint8Array
  readonly qos?: QoS
  readonly retain?: boolean
  readonly properties?: MessageProperties
}

export class InvalidTopic extends Error {
  readonly _tag = "InvalidTopic"
}

/** `broker.publish`: a property a PUBLISH could not carry (a Response Topic that is not a topic name, a string with a control character) */
export class InvalidProperties extends Error {
  readonly _tag = "InvalidProperties"
}

/**
 * A topic name a client's PUBLISH may carry: valid (protocol/topic.ts), and without the control
 * characters and non-characters the codec refuses in every packet's strings, which Mosquitto's
 * clients take for a malformed packet (Mosquitto's mosquitto_broker_publish checks nothing)
 */
const publishableTopic = (topic: string): boolean => validateTopicName(topic) && !hasForbiddenCodePoint(topic)

/**
 * What is wrong with a message's v5 properties for a PUBLISH, if anything: the Response Topic must be a
 * topic name [MQTT-3.3.2-14], and no string may hold U+0000, a control character or a non-character,
 * which Mosquitto's clients take for a malformed packet (the rule every packet's strings follow).
 */
const propertiesProblem = (p: MessageProperties | undefined): string | undefined => {
  if (p === undefined) return undefined
  if (p.responseTopic !== undefined && !publishableTopic(p.responseTopic)) return `invalid response topic '${p.responseTopic}'`
  if (p.contentType !== undefined && hasForbiddenCodePoint(p.contentType)) return `invalid content type '${p.contentType}'`
  for (const [name, value] of Object.entries(p.userProperties ?? {})) {
    if (hasForbiddenCodePoint(name)) return `invalid user property name '${name}'`
    for (const v of Array.isArray(value) ? value : [value]) if (hasForbiddenCodePoint(v)) return `invalid value '${v}' of user property '${name}'`
  }
  return undefined
}

export interface BrokerService {
  /** The listeners as bound (actual ports when 0 was asked); changes on reload. */
  readonly listeners: ReadonlyArray<BoundListener>
  /**
   * Apply new options (SIGHUP): settings are replaced, listeners that still bind
   * the same address keep their clients (their per-listener settings updated),
   * removed ones close, new ones open. The log is the caller's to reconfigure.
   */
  readonly reload: (options: BrokerOptions) => Effect.Effect<void, ListenError>
  /** Publish as if from a client; returns the number of subscribers it reached. */
  readonly publish: (message: PublishInput) => Effect.Effect<number, InvalidTopic | InvalidProperties>
  /**
   * Subscribe in-process: a Stream of the messages matching `filter`, retained
   * ones first; the subscription ends with the stream.
   */
  readonly subscribe: (filter: string, options?: { readonly qos?: QoS }) => Stream.Stream<ReceivedMessage, InvalidTopic>
  /**
   * Disconnect a connected client on the broker's initiative (v5: DISCONNECT with
   * `reasonCode`, default 0x98 Administrative action). Its will is published and
   * its session kept as its expiry says. Returns false when it is not connected.
   */
  readonly disconnectClient: (clientId: string, reasonCode?: number, reasonString?: string) => Effect.Effect<boolean>
  /** Counters for monitoring. */
  readonly stats: () => Readonly<Stats> & { readonly subscriptions: number; readonly retained: number; readonly sessions: number }
  /** @internal the synchronous core (tests, $SYS) */
  readonly core: Core
  /** this node in its cluster, when `cluster` was configured */
  readonly cluster?: Cluster.ClusterNode
}

let inProcessIds = 0

/**
 * Rebuild the broker's state from the store: retained messages, persistent
 * sessions with their subscriptions, in-flight and queued deliveries (one
 * Message object per stored message) and inbound QoS 2 ids. A session that was
 * connected when the broker stopped lost its connection then: its will is
 * published (or waits for its delay). Returns the offline sessions, whose
 * expiry timers the caller starts.
 */
const restore = (core: Core, persistence: PersistenceService): Effect.Effect<Array<Session>, StoreError> =>
  Effect.gen(function* () {
    const snapshot = yield* persistence.load((m) => {
      const message = new Message(m.topic, m.payload, m.qos, m.retain, m.properties, m.origin, m.receivedAt)
      return message
    })
    const now = core.now()
    for (const m of snapshot.retained) core.router.retained.set(m)
    // from here on every change is recorded
    const writer = persistence.writer
    core.store = writer
    // $SYS values are the running broker's own: not stored
    core.router.retained.onChange = (m) => {
      if (!m.topic.startsWith("$SYS/")) writer.retainedSet(m)
    }
    const offline: Array<Session> = []
    const shared = (s: { readonly group: string; readonly filter: string } | undefined) =>
      s === undefined ? undefined : core.router.sharedGroup(s.group, s.filter)
    let bridges = 0
    for (const stored of snapshot.sessions) {
      const bridge = bridgeNameOfSessionKey(stored.clientId)
      if (bridge !== undefined) {
        // a bridge's local session: the bridge of that name takes it when it starts
        core.storedBridges.set(bridge, stored)
        bridges++
        continue
      }
      const session = core.newSession(stored.clientId)
      session.expiryInterval = stored.expiryInterval
      session.disconnectedAt = stored.disconnectedAt ?? now
      core.sessions.set(stored.clientId, session)
      for (const [filter, options] of stored.subscriptions) {
        core.router.subscribe(session, filter, options)
        session.subscriptions.set(filter, options)
      }
      session.flow.restore(
        stored.inflight.map((e): InflightEntry => ({ ...e, shared: shared(e.shared) })),
        stored.queue.map((q): Outgoing => ({ ...q, shared: shared(q.shared) }))
      )
      // the store checks ids as it replays them; checked again as the set throws on one out of range (a store of another make)
      for (const id of stored.inboundQos2) if (isPacketId(id)) session.qos2.awaitingRel.add(id)
      const will = stored.will
      if (will !== undefined) {
        const message = new Message(will.topic, will.payload, will.qos, will.retain, will.properties, stored.clientId, now)
        const at = stored.disconnectedAt === undefined ? now + will.delayInterval * 1000 : stored.disconnectedAt + will.delayInterval * 1000
        if (will.delayInterval === 0 || at <= now) core.router.publish(message)
        else session.pendingWill = { message, at }
      }
      const pending = session.pendingWill
      core.persist(
        session,
        // the delay counts from the stored offline time, as at the first disconnect (not from now: a second restart would shorten it)
        pending === undefined ? undefined : { ...will!, delayInterval: Math.max(0, Math.ceil((pending.at - session.disconnectedAt) / 1000)) },
        true
      )
      offline.push(session)
    }
    core.log.notice(
      `Restored ${snapshot.retained.length} retained messages and ${snapshot.sessions.length - bridges} sessions${bridges > 0 ? ` and ${bridges} bridge sessions` : ""} from the store.`
    )
    return offline
  })

export class Broker extends Context.Tag("midge/Broker")<Broker, BrokerService>() {
  static readonly make = (options: BrokerOptions): Effect.Effect<BrokerService, ListenError | Cluster.ClusterError, import("effect").Scope.Scope> =>
    Effect.gen(function* () {
      const clock = yield* Effect.clock
      const settings: CoreSettings = { ...defaultSettings, ...options.settings }
      const core = new Core(settings, options.log ?? silentLog(), () => clock.unsafeCurrentTimeMillis())
      // security: the Authentication / Authorization / EnhancedAuthentication services when provided
      const authentication = yield* Effect.serviceOption(Authentication)
      const authorization = yield* Effect.serviceOption(Authorization)
      const enhanced = yield* Effect.serviceOption(EnhancedAuthentication)
      const runtime = yield* Effect.runtime<never>()
      if (Option.isSome(authorization)) {
        // the checks' own log lines (the acl_file's notice for a dangerous username or client id) go to the broker's log
        const forClient = authorization.value.forClient
        const notice = (message: string): void => core.log.notice(message)
        // the fields named, not `{ ...client, notice }`: V8 added `notice` to each spread copy through its
        // slow path, a runtime call on every connect (docs/performance.md, "Twentieth round")
        core.authorize = (client) => forClient({ clientId: client.clientId, username: client.username, listenerPort: client.listenerPort, notice })
      }
      const listenerAllowAnonymous = new Map<number, boolean | undefined>()
      const authenticate = makeAuthHook(runtime, authentication, enhanced, (port) => listenerAllowAnonymous.get(port) ?? core.settings.allowAnonymous)
      const sessions = yield* FiberMap.make<string, void, never>()
      const forkSession = yield* FiberMap.runtime(sessions)<never>()
      // sessions made outside a connection (cluster adoption) get their expiry timer here
      core.expireLater = (session) => void forkSession(session.clientId, expiryFiber(core, session))

      // persistence: rebuild retained messages and persistent sessions, then record every change
      const persistence = yield* Effect.serviceOption(Persistence)
      if (Option.isSome(persistence)) {
        const restored = yield* restore(core, persistence.value).pipe(Effect.orDie)
        for (const session of restored) forkSession(session.clientId, expiryFiber(core, session))
      }
      // cluster: join before the listeners open, so that the first CONNECT already asks Redis who owns its session
      const cluster = options.cluster !== undefined ? yield* Cluster.make(core, options.cluster) : undefined
      const brokerScope = yield* Effect.scope
      // shutdown without a store: runs after every listener has closed (finalizers run in reverse)
      if (Option.isNone(persistence) && cluster === undefined) yield* Effect.addFinalizer(() => Effect.sync(() => core.publishPendingWills()))
      // each listener in a scope of its own, so a reload can close one and keep the others
      const open = new Map<string, { readonly scope: Scope.CloseableScope; readonly bound: BoundListener }>()
      const listeners: Array<BoundListener> = []
      // the open listeners in the options' order, as $CONTROL/broker/v1's listListeners describes them
      const described: Array<ListenerInfo> = []
      const openListeners = (wanted: ReadonlyArray<NonNullable<BrokerOptions["listeners"]>[number]>) =>
        Effect.gen(function* () {
          const keep = new Set<string>()
          // the same place named twice is two listeners, as in Mosquitto: the second bind fails
          // ("Address already in use") rather than folding into the first; port 0 listeners each get a port
          const seen = new Map<string, number>()
          const inOrder: Array<ListenerInfo> = []
          const describe = (l: ListenerOptions, bound: BoundListener) =>
            inOrder.push({
              port: bound.port,
              protocol: l.protocol,
              host: l.host,
              socketPath: bound.socketPath,
              tls: l.tls !== undefined && isTlsListener(l.tls)
            })
          for (const l of wanted) {
            const opts: ListenerOptions = { ...l, maxConnections: l.maxConnections ?? -1, authenticate }
            listenerAllowAnonymous.set(l.port, l.allowAnonymous)
            const place = listenerKey(opts)
            const nth = seen.get(place) ?? 0
            seen.set(place, nth + 1)
            const key = nth === 0 ? place : `${place}#${nth}`
            keep.add(key)
            const existing = open.get(key)
            if (existing !== undefined) {
              existing.bound.update(opts)
              describe(l, existing.bound)
              continue
            }
            const scope = yield* Scope.fork(brokerScope, ExecutionStrategy.sequential)
            const bound = yield* listenTcp(core, opts, sessions).pipe(
              Scope.extend(scope),
              Effect.map((b): BoundListener | undefined => b),
              Effect.catchAll((error) =>
                Effect.zipRight(
                  Scope.close(scope, Exit.void),
                  l.optional === true
                    ? Effect.sync(() => {
                        core.log.warning(`Warning: ${error.message}; skipped.`)
                        return undefined
                      })
                    : Effect.fail(error)
                )
              )
            )
            if (bound !== undefined) {
              open.set(key, { scope, bound })
              describe(l, bound)
            }
          }
          for (const [key, { scope }] of open) {
            if (keep.has(key)) continue
            open.delete(key)
            yield* Scope.close(scope, Exit.void)
          }
          listeners.length = 0
          for (const { bound } of open.values()) listeners.push(bound)
          described.length = 0
          described.push(...inOrder)
        })
      const wanted = options.listeners ?? []
      // a start that fails on one listener closes those it opened now, not when the caller's scope ends
      yield* openListeners(wanted).pipe(
        Effect.onError(() => Effect.forEach(open.values(), ({ scope }) => Scope.close(scope, Exit.void), { discard: true }))
      )


      // `retain_expiry_interval`: a sweep of the expired retained messages every so many seconds
      const retainSweep = yield* FiberHandle.make<void, never>()
      const sweepRetained = Effect.sync(() => void core.router.retained.sweepExpired(core.now()))
      yield* runEvery(retainSweep, settings.retainExpiryInterval, sweepRetained)

      // `enable_control_api` (Mosquitto 2.1): $CONTROL/broker/v1 answered while it is on, as broker_control__reload
      let controlApi: (() => void) | undefined
      const applyControlApi = () => {
        if (core.settings.enableControlApi && controlApi === undefined) controlApi = registerBrokerControl({ core, listeners: () => described })
        else if (!core.settings.enableControlApi && controlApi !== undefined) {
          controlApi()
          controlApi = undefined
        }
      }
      applyControlApi()
      yield* Effect.addFinalizer(() => Effect.sync(() => controlApi?.()))

      const reload = (next: BrokerOptions) =>
        Effect.gen(function* () {
          const sweptEvery = core.settings.retainExpiryInterval
          core.applySettings({ ...defaultSettings, ...next.settings })
          applyControlApi()
          // a new interval replaces the sweep's schedule; an unchanged one keeps its rhythm
          if (core.settings.retainExpiryInterval !== sweptEvery) yield* runEvery(retainSweep, core.settings.retainExpiryInterval, sweepRetained)
          yield* openListeners(next.listeners ?? [])
          // certificates and keys are read again; connected clients stay
          for (const { bound } of open.values()) yield* bound.reloadTls
        })

      const publish = (input: PublishInput) =>
        Effect.suspend((): Effect.Effect<number, InvalidTopic | InvalidProperties> => {
          if (!publishableTopic(input.topic)) return Effect.fail(new InvalidTopic(`invalid topic name '${input.topic}'`))
          const wrong = propertiesProblem(input.properties)
          if (wrong !== undefined) return Effect.fail(new InvalidProperties(wrong))
          const payload = typeof input.payload === "string" ? Buffer.from(input.payload) : Buffer.from(input.payload)
          return Effect.succeed(core.publish(input.topic, payload, input.qos ?? 0, input.retain ?? false, input.properties))
        })

      const subscribe = (filter: string, subOptions?: { readonly qos?: QoS }) =>
        validateTopicFilter(filter) && !hasForbiddenCodePoint(filter)
          ? Stream.asyncPush<ReceivedMessage>((emit) =>
              Effect.acquireRelease(
                Effect.sync(() => {
                  const subscriber: Subscriber = {
                    clientId: `$midge/in-process/${++inProcessIds}`,
                    routedSubscriptions: 0,
                    online: () => true,
                    deliver: (message: Message, qos: QoS, retain: boolean) => {
                      emit.single({ topic: message.topic, payload: message.payload, qos, retain, properties: message.properties })
                    }
                  }
                  const opts: SubscriptionOptions = {
                    qos: subOptions?.qos ?? 2,
                    noLocal: false,
                    retainAsPublished: false,
                    retainHandling: 0,
                    subscriptionId: undefined
                  }
                  core.router.retained.match(
                    filter,
                    (message) => subscriber.deliver(message, (message.qos < opts.qos ? message.qos : opts.qos) as QoS, true, undefined, undefined),
                    core.now()
                  )
                  core.router.subscribe(subscriber, filter, opts)
                  return subscriber
                }),
                (subscriber) => Effect.sync(() => core.router.unsubscribe(subscriber, filter))
              )
            )
          : Stream.fail(new InvalidTopic(`invalid topic filter '${filter}'`))

      if (wanted.length > 0 && listeners.length === 0) {
        return yield* Effect.fail(
          new ListenError({ port: wanted[0].port, host: wanted[0].host, reason: "other", message: "no listener could be opened" })
        )
      }
      const disconnectClient = (clientId: string, reasonCode = 0x98, reasonString?: string) =>
        Effect.sync(() => {
          const conn = core.attached.get(clientId)
          if (conn === undefined) return false
          conn.kick(reasonCode, reasonString)
          return true
        })

      return {
        listeners,
        reload,
        disconnectClient,
        publish,
        subscribe,
        stats: () => ({
          ...core.stats,
          subscriptions: core.router.subscriptionCount,
          retained: core.router.retained.size,
          sessions: core.sessions.size
        }),
        core,
        ...(cluster !== undefined ? { cluster } : {})
      } satisfies BrokerService
    })

  /** The broker as a Layer: listeners open when the layer is built, close with its scope. */
  static readonly layer = (options: BrokerOptions): Layer.Layer<Broker, ListenError | Cluster.ClusterError> =>
    Layer.scoped(Broker, Broker.make(options))
}
