/**
 * `--help` for the three tools: one table of flags per tool, rendered with
 * @effect/cli's HelpDoc (plain text when stdout is not a terminal).
 */
import { HelpDoc } from "@effect/cli"
import * as Span from "@effect/cli/HelpDoc/Span"
import { VERSION, type ToolName } from "./version.js"

type Flag = readonly [usage: string, description: string]

const connection: ReadonlyArray<Flag> = [
  ["-h, --host HOST", "broker host to connect to. Defaults to localhost."],
  ["-p, --port PORT", "network port. Defaults to 1883, or 8883 for MQTT over TLS."],
  ["--unix PATH", "connect through a Unix domain socket instead of TCP."],
  ["-L, --url URL", "mqtt(s)://[user[:password]@]host[:port]/topic or ws(s)://... : user, password, host, port and topic in one."],
  ["--ws", "connect with WebSockets (path /mqtt)."],
  ["-A ADDRESS", "bind the outgoing socket to this local address."],
  ["-V, --protocol-version VERSION", "mqttv5, mqttv311 or mqttv31 (or 5, 311, 31). Defaults to mqttv311."],
  ["-i, --id ID", "client id. Default: none, so the broker assigns one (MQTT 3.1: mosq- and random characters)."],
  ["-I, --id-prefix PREFIX", "client id: this prefix and the process id."],
  ["-k, --keepalive SECONDS", "keep alive interval, 5 to 65535. Defaults to 60."],
  ["-c, --disable-clean-session", "persistent session: the broker keeps subscriptions and queued messages (needs -i). With MQTT 5 the session never expires unless -x says otherwise."],
  ["-x SECONDS", "MQTT 5 session expiry interval: 0 to 4294967294, or -1, 4294967295 or ∞ for never."],
  ["-u, --username USER", "user name."],
  ["-P, --pw PASSWORD", "password."],
  ["-q, --qos QOS", "quality of service, 0, 1 or 2. Defaults to 0."],
  ["-D, --property COMMAND PROPERTY VALUE", "an MQTT 5 property for a packet (connect, publish, subscribe, unsubscribe, disconnect, will); user-property takes a KEY and a VALUE. Implies MQTT 5."],
  ["--will-topic TOPIC", "topic of the will the broker publishes if the connection drops."],
  ["--will-payload PAYLOAD", "payload of the will (empty if not given)."],
  ["--will-qos QOS", "QoS of the will."],
  ["--will-retain", "retain the will."],
  ["-M COUNT", "maximum messages in flight (accepted; the client's own window applies)."],
  ["--nodelay", "disable Nagle's algorithm."],
  ["-d, --debug", "print the packets sent and received."],
  ["--quiet", "print no error messages."],
  ["--cafile FILE", "trusted CA certificates (PEM): enables TLS."],
  ["--capath DIR", "directory of trusted CA certificates: enables TLS."],
  ["--cert FILE", "client certificate (PEM)."],
  ["--key FILE", "client private key (PEM)."],
  ["--keyform pem", "key format; only pem."],
  ["--ciphers LIST", "OpenSSL cipher list."],
  ["--tls-version VERSION", "tlsv1.3, tlsv1.2 or tlsv1.1. Default: TLS 1.2 or later."],
  ["--tls-alpn PROTOCOL", "ALPN protocol to offer."],
  ["--tls-use-os-certs", "trust the system's CA certificates (with --cafile/--capath: as well)."],
  ["--insecure", "do not check that the server certificate's name matches the host."],
  ["--psk HEX", "TLS pre-shared key in hexadecimal: enables TLS-PSK."],
  ["--psk-identity IDENTITY", "identity for the pre-shared key."],
  ["--help", "show this help."],
  ["--version", "show the version."]
]

const pubFlags: ReadonlyArray<Flag> = [
  ["-t, --topic TOPIC", "topic to publish to."],
  ["-m, --message MESSAGE", "the message payload."],
  ["-f, --file FILE", "send the contents of a file as the message."],
  ["-s, --stdin-file", "send all of stdin as the message."],
  ["-l, --stdin-line", "send each line of stdin as a message."],
  ["-n, --null-message", "send an empty message."],
  ["-r, --retain", "retain the message."],
  ["--repeat COUNT", "with -m, -f or -s, publish the message COUNT times."],
  ["--repeat-delay SECONDS", "with --repeat, wait this long between publishes."],
  ...connection
]

const subFlags: ReadonlyArray<Flag> = [
  ["-t, --topic FILTER", "topic filter to subscribe to; repeatable."],
  ["-T, --filter-out FILTER", "do not print messages whose topic matches; repeatable."],
  ["-U, --unsubscribe FILTER", "unsubscribe from a filter (of a persistent session); repeatable."],
  ["-v, --verbose", "print the topic before each payload."],
  ["-N", "no end of line after each message."],
  ["-F FORMAT", "output format: %t topic, %p payload, %q QoS, %r retain, %l length, %m message id, %x/%X hex payload, %I ISO 8601 time, %U Unix time, %j/%J JSON, %C %D %E %F %P %R %S %A MQTT 5 properties; @ and a strftime letter for the time; \\n \\t \\\\ escapes."],
  ["--pretty", "indented JSON for %j and %J."],
  ["-C COUNT", "exit after COUNT messages."],
  ["-W SECONDS", "exit (code 27) after SECONDS without finishing."],
  ["-E", "exit once the subscriptions are acknowledged."],
  ["-R", "do not print retained (stale) messages."],
  ["--retained-only", "print retained messages only; exit at the first live one."],
  ["--remove-retained", "clear every retained message received (use -T to spare some)."],
  ["--random-filter PERCENT", "print only this percentage of messages, at random."],
  ["--retain-as-published, --rap", "MQTT 5: keep the retain flag of forwarded messages."],
  ["--no-local, --nl", "MQTT 5: do not receive this client's own messages."],
  ["--retain-handling 0|1|2", "MQTT 5: retained messages on subscribe: 0 always, 1 only for a new subscription, 2 never."],
  ...connection
]

const passwdFlags: ReadonlyArray<Flag> = [
  ["-c", "create a new password file, overwriting an existing one."],
  ["-b", "batch mode: take the password from the command line."],
  ["-D", "delete the user."],
  ["-U", "hash the plain-text passwords of a file in place."],
  ["-H sha512|sha512-pbkdf2|argon2id", "hash to use. Defaults to sha512-pbkdf2 (readable by Mosquitto 2.0 and later; argon2id needs Mosquitto 2.1)."],
  ["-I ITERATIONS", "PBKDF2 iterations. Defaults to 101."],
  ["--help", "show this help."]
]

const usage: Record<ToolName, ReadonlyArray<string>> = {
  pub: [
    "{-h host | --unix path} [-p port] [-u username [-P password]] -t topic | -L URL",
    "{-f file | -l | -n | -m message | -s} [-q qos] [-r] [--repeat N] [--repeat-delay seconds]",
    "[connection, TLS, will and MQTT 5 options below]"
  ],
  sub: [
    "{-h host | --unix path} [-p port] [-u username [-P password]] -t topic ... | -L URL [-t topic ...]",
    "[-q qos] [-C count] [-W seconds] [-E] [-R] [--retained-only] [--remove-retained] [-T filter ...] [-U filter ...]",
    "[-v] [-N] [-F format] [--pretty]  [connection, TLS, will and MQTT 5 options below]"
  ],
  passwd: [
    "[-H sha512 | -H sha512-pbkdf2 | -H argon2id] [-I iterations] [-c | -D] passwordfile username",
    "[-H sha512 | -H sha512-pbkdf2 | -H argon2id] [-I iterations] [-c] -b passwordfile username password",
    "-U passwordfile"
  ]
}

const summary: Record<ToolName, string> = {
  pub: "publishes a message to an MQTT broker and exits; flag-compatible with mosquitto_pub.",
  sub: "subscribes to topics on an MQTT broker and prints the messages it receives; flag-compatible with mosquitto_sub.",
  passwd: "manages password files for Midge and Mosquitto; flag-compatible with mosquitto_passwd."
}

const stripAnsi = (text: string) => text.replace(/\u001b\[[0-9;]*m/g, "")

export const helpDoc = (tool: ToolName, name: string): HelpDoc.HelpDoc =>
  HelpDoc.blocks([
    HelpDoc.p(`${name} ${summary[tool]}`),
    HelpDoc.p(`${name} version ${VERSION}.`),
    HelpDoc.h1("USAGE"),
    ...usage[tool].map((line) => HelpDoc.p(`${name} ${line}`)),
    HelpDoc.h1("OPTIONS"),
    HelpDoc.descriptionList(
      (tool === "pub" ? pubFlags : tool === "sub" ? subFlags : passwdFlags).map(([u, d]) => [Span.text(u), HelpDoc.p(d)] as [Span.Span, HelpDoc.HelpDoc]) as unknown as [
        [Span.Span, HelpDoc.HelpDoc],
        ...Array<[Span.Span, HelpDoc.HelpDoc]>
      ]
    ),
    HelpDoc.p("See docs/tools.md for each flag's status in Midge.")
  ])

/** The `--help` text; ANSI styles only on a terminal. */
export const helpText = (tool: ToolName, name: string, tty: boolean = process.stdout.isTTY === true): string => {
  const text = HelpDoc.toAnsiText(helpDoc(tool, name))
  return tty ? text : stripAnsi(text)
}

