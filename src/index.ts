/**
 * Midge: an MQTT broker for Effect applications. See docs/embedding.md.
 */
export { Broker, brokerOptionsFromConfig, InvalidProperties, InvalidTopic, type BrokerOptions, type BrokerService, type PublishInput, type ReceivedMessage } from "./Broker.js"
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
// security: your own services (docs/security.md "Plugging in your own services"), or Mosquitto's file-based security from a mosquitto.conf
export {
  allowAll,
  allowAllAcl,
  Authentication,
  AuthConfigError,
  Authorization,
  layerFromConfig as securityLayerFromConfig,
  optionsFromConfig as securityOptionsFromConfig,
  SecurityFiles,
  type AuthClient,
  type AuthDecision,
  type AuthenticationService,
  type AuthOptions,
  type AuthorizationService,
  type AuthRequest,
  type AuthResult,
  type ClientAcl,
  type SecurityFilesService
} from "./security/Auth.js"
export {
  EnhancedAuthentication,
  type AuthStepRequest,
  type AuthStepResult,
  type EnhancedAuthenticationService
} from "./security/EnhancedAuth.js"
export {
  DynamicSecurity,
  DynamicSecurityError,
  layerFromConfig as dynamicSecurityLayerFromConfig,
  type DynamicSecurityOptions,
  type DynamicSecurityService
} from "./security/DynamicSecurity.js"
