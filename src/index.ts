/**
 * Midge: an MQTT broker for Effect applications. See docs/embedding.md.
 */
export { Broker, brokerOptionsFromConfig, InvalidTopic, type BrokerOptions, type BrokerService, type PublishInput, type ReceivedMessage } from "./Broker.js"
export { Log, stderrSink, type LogSink, type LogType } from "./log/Log.js"
export type { CoreSettings } from "./session/Core.js"
export type { MessageProperties, QoS } from "./session/Message.js"
export { ListenError, type BoundListener } from "./transport/Listener.js"
export {
  ConfigError,
  defaults as defaultConfig,
  loadConfigFile,
  parseConfigText,
  type BrokerConfig,
  type ListenerConfig
} from "./config/Config.js"
