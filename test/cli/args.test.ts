/**
 * Argument errors, differentially: for each command line, Debian's
 * mosquitto_pub / mosquitto_sub (2.0.11) and `midge pub` / `midge sub` must
 * exit with the same code and print the same error text (with the tool's
 * name swapped), so scripts that check them keep working. None of these
 * command lines gets as far as connecting.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { midge, run } from "./helpers.js"

const pubCases: ReadonlyArray<ReadonlyArray<string>> = [
  // a flag without its value
  ...["-A", "-f", "-h", "-i", "-I", "-k", "-L", "-M", "-m", "-p", "-P", "--proxy", "-q", "--repeat", "--repeat-delay", "-t", "-u", "--unix", "-V", "--will-payload", "--will-qos", "--will-topic", "-x", "--cafile", "--capath", "--cert", "--key", "--ciphers", "--psk", "--psk-identity", "--tls-version", "--tls-alpn", "--keyform"].map((f) => [f]),
  // -D
  ["-V", "5", "-D"],
  ["-V", "5", "-D", "connect"],
  ["-V", "5", "-D", "connect", "receive-maximum"],
  ["-V", "5", "-D", "invalid", "receive-maximum", "1"],
  ["-V", "5", "-D", "connect", "invalid", "1"],
  ["-V", "5", "-D", "connect", "will-delay-interval", "1"],
  ["-V", "5", "-D", "connect", "user-property", "key"],
  ["-V", "5", "-D", "connect", "receive-maximum", "-1"],
  ["-V", "5", "-D", "connect", "receive-maximum", "65536"],
  ["-V", "5", "-D", "connect", "request-problem-information", "256"],
  ["-V", "5", "-D", "connect", "session-expiry-interval", "-1"],
  ["-V", "5", "-D", "connect", "subscription-identifier", "1"],
  ["-V", "5", "-D", "publish", "subscription-identifier", "1"],
  ["-V", "5", "-D", "subscribe", "content-type", "x"],
  ["-D", "auth", "reason-string", "x"],
  // invalid combinations
  ["-i", "", "-t", "t", "-m", "m"],
  ["-P", "secret", "-t", "t", "-m", "m"],
  ["-V", "mqttv31", "-P", "secret", "-t", "t", "-m", "m"],
  ["-i", "id", "-I", "id-prefix"],
  ["-I", "id-prefix", "-i", "id"],
  ["--will-payload", "payload"],
  ["--will-retain"],
  ["-V", "mqttv5", "-x", "-1"],
  ["-V", "mqttv5", "-c"],
  ["-V", "mqttv311", "-c"],
  ["-c", "-I", "prefix"],
  ["-m", "message", "-f", "file"],
  ["-m", "message", "-l"],
  ["-l", "-m", "message"],
  ["-l", "-n"],
  ["-l", "-s"],
  ["-n", "-f", "x"],
  ["--cert", "c.pem", "-t", "t", "-m", "m"],
  ["--key", "k.pem", "-t", "t", "-m", "m"],
  ["--psk", "00ff", "-t", "t", "-m", "m"],
  ["--cafile", "ca.pem", "--psk", "00ff", "--psk-identity", "i", "-t", "t", "-m", "m"],
  // invalid values
  ["-t", "topic", "-f", "/nonexistent/missing"],
  ["-k", "-1"],
  ["-k", "4"],
  ["-k", "65536"],
  ["-M", "0"],
  ["-p", "-1"],
  ["-p", "65536"],
  ["-q", "-1"],
  ["-q", "3"],
  ["-q", "x"],
  ["--repeat", "0"],
  ["--repeat-delay", "-1"],
  ["--will-qos", "3"],
  ["--will-topic", "a/+"],
  ["-t", "topic/+"],
  ["-t", "topic/#"],
  ["-t", ""],
  ["-V", "6"],
  ["-V", "mqttv4"],
  ["-x", "abc"],
  ["-x", "4294967296"],
  ["-x", "-2"],
  ["-L", "http://host/topic"],
  ["-L", "mqtt://host"],
  ["-L", "mqtt://host:1883/a/+"],
  ["-m", "only a message"],
  ["-t", "only/a/topic"],
  // unknown options, and sub's options
  ["--unknown"],
  ["-e", "response-topic"],
  ...["-C", "-E", "-F", "-N", "--pretty", "-R", "--random-filter", "--remove-retained", "--retain-as-published", "--retained-only", "-T", "-U", "-v", "-W", "-w"].map((f) => [f, "1"]),
  ["--help"],
  ["--version"]
]

const subCases: ReadonlyArray<ReadonlyArray<string>> = [
  ...["-C", "-F", "-T", "-U", "-W", "--random-filter", "-t", "-h", "-q"].map((f) => [f]),
  [],
  ["-q", "1"],
  ["-i", "", "-t", "t"],
  ["-P", "secret", "-t", "t"],
  ["-C", "0", "-t", "x"],
  ["-C", "x", "-t", "x"],
  ["-W", "0", "-t", "x"],
  ["-t", "a/#/b"],
  ["-t", "a+"],
  ["-T", "a/#/b", "-t", "x"],
  ["-U", "a/#/b", "-t", "x"],
  ["-F", "%z", "-t", "x"],
  ["-F", "abc%", "-t", "x"],
  ["-F", "%-", "-t", "x"],
  ["-F", "%10", "-t", "x"],
  ["-F", "%.", "-t", "x"],
  ["-F", "\\z", "-t", "x"],
  ["-F", "x\\", "-t", "x"],
  ["-F", "@", "-t", "x"],
  ["-R", "--retained-only", "-t", "x"],
  ["--random-filter", "0", "-t", "x"],
  ["--random-filter", "100.1", "-t", "x"],
  ["-c", "-t", "x"],
  ["-c", "-V", "5", "-t", "x"],
  ["-i", "x", "-I", "y"],
  ["-L", "mqtt://host:1883/a/#/b"],
  ...["-m", "-r", "-n", "-l", "-s", "-f", "--repeat", "--repeat-delay"].map((f) => [f, "1", "-t", "x"]),
  ["--help"],
  ["--version"]
]

const compare = (tool: "pub" | "sub", args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    // a generous bound: a Node start-up can take seconds on a loaded machine, and a killed run has no exit code
    const bounded = { timeoutMs: 30_000 }
    const [theirs, ours] = yield* Effect.all([run(`mosquitto_${tool}`, args, bounded), midge(tool, args, bounded)], { concurrency: 2 })
    const what = `${tool} ${args.join(" ")}`
    expect(ours.code, what).toBe(theirs.code)
    if (args[0] === "--help" || args[0] === "--version") {
      expect(ours.stdout, what).toContain(`midge ${tool}`)
      return
    }
    expect(ours.stderr, what).toBe(theirs.stderr.replaceAll(`mosquitto_${tool}`, `midge ${tool}`))
  })

/** Cases in groups of 12, four command lines at a time: each process costs a Node start-up. */
const groups = <A>(cases: ReadonlyArray<A>): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < cases.length; i += 12) out.push(cases.slice(i, i + 12))
  return out
}

describe("midge pub: argument errors are mosquitto_pub's", () => {
  for (const group of groups(pubCases)) {
    it.live(group.map((a) => `[${a.join(" ")}]`).join(" "), () => Effect.forEach(group, (args) => compare("pub", args), { concurrency: 4, discard: true }), 120_000)
  }
})

describe("midge sub: argument errors are mosquitto_sub's", () => {
  for (const group of groups(subCases)) {
    it.live(group.map((a) => `[${a.join(" ")}]`).join(" "), () => Effect.forEach(group, (args) => compare("sub", args), { concurrency: 4, discard: true }), 120_000)
  }
})

describe("midge dispatch", () => {
  it.live("midge-pub, midge-sub and midge-passwd are the same tools under their own names", () =>
    Effect.gen(function* () {
      const { bins } = yield* Effect.promise(() => import("./helpers.js"))
      const pub = yield* run("node", [bins.pub, "-q", "3"])
      expect(pub.code).toBe(1)
      expect(pub.stderr).toBe("Error: Invalid QoS given: 3\n\nUse 'midge-pub --help' to see usage.\n")
      const sub = yield* run("node", [bins.sub])
      expect(sub.stderr).toBe("Error: You must specify a topic to subscribe to.\n\nUse 'midge-sub --help' to see usage.\n")
      const passwd = yield* run("node", [bins.passwd, "-c", "-D", "f", "u"])
      expect(passwd).toMatchObject({ code: 1, stderr: "Error: -c and -D cannot be used together.\n" })
    })
  )

  it.live("--help of each tool lists its flags and exits 1, as Mosquitto's tools do", () =>
    Effect.gen(function* () {
      for (const [tool, flag] of [["pub", "--repeat-delay"], ["sub", "--retained-only"], ["passwd", "sha512-pbkdf2"]] as const) {
        const r = yield* midge(tool, ["--help"])
        expect(r.code).toBe(1)
        expect(r.stdout).toContain(flag)
        expect(r.stdout).not.toContain("\u001b[")
      }
    })
  )
})
