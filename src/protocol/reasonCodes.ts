/**
 * Return and reason codes, by name.
 *
 * MQTT 3.1 / 3.1.1 answer a CONNECT with a one-byte return code (0..5,
 * 3.1.1 §3.2.2.3); SUBACK uses 0x80 for a refused filter. MQTT 5 replaces
 * both with the shared reason code table of §2.4 (one value, several names:
 * 0x00 is Success, Normal disconnection and Granted QoS 0).
 */

/** CONNACK return codes for MQTT 3.1 / 3.1.1 (3.1.1 §3.2.2.3, Table 3.1). */
export const ConnackV4 = {
  Accepted: 0x00,
  /** [MQTT-3.1.2-2] the Server does not support the level of the MQTT protocol requested */
  UnacceptableProtocolVersion: 0x01,
  IdentifierRejected: 0x02,
  ServerUnavailable: 0x03,
  BadUserNameOrPassword: 0x04,
  NotAuthorized: 0x05
} as const

export type ConnackV4 = (typeof ConnackV4)[keyof typeof ConnackV4]

/** SUBACK return code for a refused subscription in MQTT 3.1.1 (§3.9.3). */
export const SubackFailureV4 = 0x80

/** MQTT 5 reason codes (§2.4, Table 2-6). */
export const ReasonCode = {
  Success: 0x00,
  NormalDisconnection: 0x00,
  GrantedQoS0: 0x00,
  GrantedQoS1: 0x01,
  GrantedQoS2: 0x02,
  DisconnectWithWillMessage: 0x04,
  NoMatchingSubscribers: 0x10,
  NoSubscriptionExisted: 0x11,
  ContinueAuthentication: 0x18,
  ReAuthenticate: 0x19,
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ImplementationSpecificError: 0x83,
  UnsupportedProtocolVersion: 0x84,
  ClientIdentifierNotValid: 0x85,
  BadUserNameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  Banned: 0x8a,
  ServerShuttingDown: 0x8b,
  BadAuthenticationMethod: 0x8c,
  KeepAliveTimeout: 0x8d,
  SessionTakenOver: 0x8e,
  TopicFilterInvalid: 0x8f,
  TopicNameInvalid: 0x90,
  PacketIdentifierInUse: 0x91,
  PacketIdentifierNotFound: 0x92,
  ReceiveMaximumExceeded: 0x93,
  TopicAliasInvalid: 0x94,
  PacketTooLarge: 0x95,
  MessageRateTooHigh: 0x96,
  QuotaExceeded: 0x97,
  AdministrativeAction: 0x98,
  PayloadFormatInvalid: 0x99,
  RetainNotSupported: 0x9a,
  QoSNotSupported: 0x9b,
  UseAnotherServer: 0x9c,
  ServerMoved: 0x9d,
  SharedSubscriptionsNotSupported: 0x9e,
  ConnectionRateExceeded: 0x9f,
  MaximumConnectTime: 0xa0,
  SubscriptionIdentifiersNotSupported: 0xa1,
  WildcardSubscriptionsNotSupported: 0xa2
} as const

export type ReasonCode = (typeof ReasonCode)[keyof typeof ReasonCode]

/** A reason code of 0x80 or above reports a failure (v5 §2.4). */
export const isFailure = (code: number): boolean => code >= 0x80
