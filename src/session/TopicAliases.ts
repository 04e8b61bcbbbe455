/**
 * MQTT 5 topic alias tables of one network connection (§3.3.2.3.4). Pure:
 * no sockets, no Effect; the connection owns one of each, created on first
 * use, and both die with it (aliases never outlive the network connection
 * [MQTT-3.3.2-7]).
 */
import { ReasonCode } from "../protocol/reasonCodes.js"
import { validateTopicName } from "../protocol/topic.js"

/** Why an inbound alias was refused: the DISCONNECT reason code and a Reason String. */
export class AliasError {
  constructor(
    readonly reasonCode: number,
    readonly why: string
  ) {}
}

/**
 * Aliases the client sets in its PUBLISH packets, bounded by the broker's
 * Topic Alias Maximum (advertised on CONNACK).
 */
export class InboundAliases {
  private readonly topics = new Map<number, string>()

  constructor(
    /** the broker's Topic Alias Maximum */
    readonly maximum: number
  ) {}

  /**
   * The topic of a PUBLISH carrying `alias`: a non-empty topic sets (or
   * replaces) the mapping and is the topic; an empty one is looked up.
   * A topic that is not a valid topic name is returned unchanged and not
   * remembered (the caller refuses it: 0x90).
   */
  resolve(topic: string, alias: number): string | AliasError {
    // [MQTT-3.3.2-8] [MQTT-3.3.2-9] 0 or above our Topic Alias Maximum: Topic Alias invalid
    if (alias === 0 || alias > this.maximum) return new AliasError(ReasonCode.TopicAliasInvalid, `topic alias ${alias} out of range`)
    if (topic.length === 0) {
      const known = this.topics.get(alias)
      // an alias the client never set: a protocol error (§3.3.4)
      return known ?? new AliasError(ReasonCode.ProtocolError, `unknown topic alias ${alias}`)
    }
    if (validateTopicName(topic)) this.topics.set(alias, topic)
    return topic
  }

  /** mappings set so far */
  get size(): number {
    return this.topics.size
  }
}

/**
 * Aliases the broker assigns towards a client that allows them (its Topic
 * Alias Maximum on CONNECT): first come first served, 1, 2, ... up to that
 * maximum [MQTT-3.3.2-10]; once they are all taken, further topics go out in
 * full. A mapping is never replaced, so a topic once aliased keeps its alias
 * for the life of the connection.
 */
export class OutboundAliases {
  private readonly aliases = new Map<string, number>()

  constructor(
    /** the client's Topic Alias Maximum, at least 1 */
    readonly maximum: number
  ) {}

  /**
   * The alias for a PUBLISH to `topic`:
   * - `n > 0`: the client knows alias n for this topic — send an empty topic with alias n;
   * - `n < 0`: a new alias -n — send the topic with alias -n (remembered only when `commit`);
   * - `0`: no alias left — send the topic, no alias.
   *
   * `commit` false only measures the packet (nothing is assigned).
   */
  lookup(topic: string, commit: boolean): number {
    const known = this.aliases.get(topic)
    if (known !== undefined) return known
    if (this.aliases.size >= this.maximum) return 0
    const alias = this.aliases.size + 1
    if (commit) this.aliases.set(topic, alias)
    return -alias
  }

  /** aliases assigned so far */
  get size(): number {
    return this.aliases.size
  }
}
