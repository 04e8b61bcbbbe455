import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { matchTopic } from "../../src/protocol/topic.js"
import { TopicTrie } from "../../src/protocol/TopicTrie.js"

type Hit = readonly [filter: string, key: string, value: number]

/** Every (filter, key, value) visited for `topic`, sorted; duplicates kept so that tests can see them. */
const hits = (trie: TopicTrie<number>, topic: string): Array<Hit> => {
  const out: Array<Hit> = []
  trie.match(topic, (key, value, filter) => out.push([filter, key, value]))
  return out.sort(compareHits)
}

const compareHits = (a: Hit, b: Hit) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)

const matchedFilters = (trie: TopicTrie<number>, topic: string) =>
  [...new Set(hits(trie, topic).map((h) => h[0]))].sort()

const trieWith = (filters: ReadonlyArray<string>, options?: { cacheSize?: number }) => {
  const trie = new TopicTrie<number>(options)
  filters.forEach((f, i) => trie.add(f, "c", i))
  return trie
}

// Three configurations: no cache, the default cache, and a 2-slot cache where topics fight over slots.
const configs = [
  ["no cache", { cacheSize: 0 }],
  ["default cache", undefined],
  ["2-slot cache", { cacheSize: 2 }]
] as const

describe("TopicTrie", () => {
  describe("matching", () => {
    it("spec examples (4.7.1)", () => {
      const trie = trieWith(["sport/tennis/player1/#", "sport/#", "sport/tennis/+", "sport/+", "+/+", "/+", "+", "#"])
      expect(matchedFilters(trie, "sport/tennis/player1"))
        .toEqual(["#", "sport/#", "sport/tennis/+", "sport/tennis/player1/#"])
      expect(matchedFilters(trie, "sport/tennis/player1/ranking")).toEqual(["#", "sport/#", "sport/tennis/player1/#"])
      expect(matchedFilters(trie, "sport")).toEqual(["#", "+", "sport/#"]) // [MQTT-4.7.1-2]
      expect(matchedFilters(trie, "sport/")).toEqual(["#", "+/+", "sport/#", "sport/+"])
      expect(matchedFilters(trie, "/finance")).toEqual(["#", "+/+", "/+"])
    })

    it("root-level wildcards never match $ topics [MQTT-4.7.2-1]", () => {
      const trie = trieWith([
        "#", "+", "+/monitor/Clients", "+/#", "$SYS/#", "$SYS/monitor/+", "$SYS/+/x", "$foo", "$SYS/monitor/Clients/#"
      ])
      expect(matchedFilters(trie, "$SYS/monitor/Clients"))
        .toEqual(["$SYS/#", "$SYS/monitor/+", "$SYS/monitor/Clients/#"])
      expect(matchedFilters(trie, "$SYS/a/x")).toEqual(["$SYS/#", "$SYS/+/x"])
      expect(matchedFilters(trie, "$SYS")).toEqual(["$SYS/#"])
      expect(matchedFilters(trie, "$foo")).toEqual(["$foo"])
      expect(matchedFilters(trie, "$bar")).toEqual([])
      expect(matchedFilters(trie, "foo")).toEqual(["#", "+", "+/#"])
      expect(matchedFilters(trie, "a/monitor/Clients")).toEqual(["#", "+/#", "+/monitor/Clients"])
    })

    it("only the first level is special: a/+ matches a/$b", () => {
      const trie = trieWith(["a/+", "a/#", "a/$b"])
      expect(matchedFilters(trie, "a/$b")).toEqual(["a/#", "a/$b", "a/+"])
    })

    it("empty levels are levels", () => {
      const trie = trieWith([
        "a//b", "a/+/b", "a/b", "a/+", "a/#", "+/+/+", "/a", "+/a", "/+", "/#", "a/", "a", "+", "/"
      ])
      expect(matchedFilters(trie, "a//b")).toEqual(["+/+/+", "a/#", "a/+/b", "a//b"])
      expect(matchedFilters(trie, "/a")).toEqual(["+/a", "/#", "/+", "/a"])
      expect(matchedFilters(trie, "a/")).toEqual(["a/", "a/#", "a/+"])
      expect(matchedFilters(trie, "a")).toEqual(["+", "a", "a/#"])
      expect(matchedFilters(trie, "/")).toEqual(["/", "/#", "/+"])
    })

    it("is case-sensitive and exact", () => {
      const trie = trieWith(["ACCOUNTS", "Accounts payable"])
      expect(matchedFilters(trie, "Accounts")).toEqual([])
      expect(matchedFilters(trie, "Accounts payable")).toEqual(["Accounts payable"])
    })

    it("visits every key of a filter once, with the filter and value", () => {
      const trie = new TopicTrie<number>()
      trie.add("a/+", "c1", 1)
      trie.add("a/+", "c2", 2)
      trie.add("a/#", "c1", 3)
      expect(hits(trie, "a/b")).toEqual([["a/#", "c1", 3], ["a/+", "c1", 1], ["a/+", "c2", 2]])
      expect(hits(trie, "b")).toEqual([])
    })

    it("a 40000-level filter and topic do not overflow the stack", () => {
      const deep = "/".repeat(39999)
      const trie = trieWith([deep, deep + "/#", "#"])
      expect(matchedFilters(trie, deep)).toEqual(["#", deep, deep + "/#"].sort())
      expect(trie.remove(deep, "c")).toBe(0)
      expect(trie.remove(deep + "/#", "c")).toBe(1)
      expect(trie.nodeCount()).toBe(1)
    })
  })

  describe("entries", () => {
    it("a repeated (filter, key) replaces the value and returns the old one [MQTT-3.8.4-3]", () => {
      const trie = new TopicTrie<number>()
      expect(trie.add("a/b", "c", 1)).toBeUndefined()
      expect(trie.add("a/b", "c", 2)).toBe(1)
      expect(trie.size).toBe(1)
      expect(trie.get("a/b", "c")).toBe(2)
      expect(hits(trie, "a/b")).toEqual([["a/b", "c", 2]])
      expect(trie.add("a/b", "d", 3)).toBeUndefined()
      expect(trie.size).toBe(2)
    })

    it("get and remove distinguish filters that share a path", () => {
      const trie = trieWith(["a", "a/b", "a/+", "a/#", "+"])
      expect(trie.get("a", "c")).toBe(0)
      expect(trie.get("a/+", "c")).toBe(2)
      expect(trie.get("a/#", "c")).toBe(3)
      expect(trie.get("a/b/c", "c")).toBeUndefined()
      expect(trie.get("a", "other")).toBeUndefined()
      expect(trie.remove("a/c", "c")).toBeUndefined()
      expect(trie.remove("a", "other")).toBeUndefined()
      expect(trie.remove("a/+", "c")).toBe(2)
      expect(trie.remove("a/+", "c")).toBeUndefined()
      expect(trie.size).toBe(4)
      expect([...trie.filters()].sort()).toEqual(["+", "a", "a/#", "a/b"])
    })

    it("remove prunes: nothing is left once every entry is gone", () => {
      const trie = trieWith(["a/b/c", "a/b", "a/+/c", "a/#", "#", "+", "$SYS/#", "//", "x/y/z/w"])
      trie.add("a/b/c", "d", 9)
      expect(trie.nodeCount()).toBeGreaterThan(10)
      for (const f of [...trie.filters()]) {
        trie.remove(f, "c")
        trie.remove(f, "d")
      }
      expect(trie.size).toBe(0)
      expect(trie.nodeCount()).toBe(0)
      expect([...trie.filters()]).toEqual([])
    })

    it("prunes only the branch that became empty", () => {
      const trie = trieWith(["a/b/c/d", "a/x"])
      expect(trie.nodeCount()).toBe(5) // a, a/b, a/b/c, a/b/c/d, a/x
      trie.remove("a/b/c/d", "c")
      expect(trie.nodeCount()).toBe(2)
      expect(matchedFilters(trie, "a/x")).toEqual(["a/x"])
    })

    it("memory does not grow under subscribe/unsubscribe churn", () => {
      const trie = trieWith(["keep/#"])
      const base = trie.nodeCount()
      for (let i = 0; i < 5000; i++) {
        const f = `dev/${i}/+/cmd/${i % 7 === 0 ? "#" : "x"}`
        trie.add(f, `c${i}`, i)
        expect(hits(trie, `dev/${i}/a/cmd/x`).length).toBe(1)
        trie.remove(f, `c${i}`)
      }
      expect(trie.nodeCount()).toBe(base)
      expect(trie.size).toBe(1)
    })
  })

  describe("cache", () => {
    for (const [name, options] of configs) {
      it(`${name}: stays exact when nodes are added and pruned between repeated matches`, () => {
        const trie = new TopicTrie<number>(options)
        trie.add("a/b", "c", 1)
        for (let i = 0; i < 3; i++) expect(hits(trie, "a/b")).toEqual([["a/b", "c", 1]])
        trie.add("a/+", "c", 2) // new node
        expect(hits(trie, "a/b")).toEqual([["a/+", "c", 2], ["a/b", "c", 1]])
        trie.add("a/+", "d", 3) // new entry on an existing node
        trie.add("a/b", "c", 4) // replaced value
        expect(hits(trie, "a/b")).toEqual([["a/+", "c", 2], ["a/+", "d", 3], ["a/b", "c", 4]])
        trie.remove("a/+", "c")
        trie.remove("a/+", "d") // node pruned
        expect(hits(trie, "a/b")).toEqual([["a/b", "c", 4]])
        trie.remove("a/b", "c")
        expect(hits(trie, "a/b")).toEqual([])
        trie.add("a/b", "c", 5) // a new node at the same place as a pruned one
        expect(hits(trie, "a/b")).toEqual([["a/b", "c", 5]])
        trie.add("a", "c", 6) // an entry on an intermediate node that a cached topic reached
        trie.add("a/b/c", "c", 7)
        for (let i = 0; i < 3; i++) expect(hits(trie, "a")).toEqual([["a", "c", 6]])
        trie.remove("a", "c")
        expect(hits(trie, "a")).toEqual([])
        trie.add("a", "c", 8)
        expect(hits(trie, "a")).toEqual([["a", "c", 8]])
      })
    }
  })

  // The trie against the reference matcher, after arbitrary add/remove sequences,
  // with matches interleaved so that cached results are checked after each change.
  describe("≡ matchTopic on every (filter, key) [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.2-1]", () => {
    const topicArb = fc
      .array(fc.constantFrom("", "a", "b", "$SYS", "$x"), { minLength: 1, maxLength: 4 })
      .map((ls) => ls.join("/"))
      .filter((t) => t.length > 0)
    const filterArb = fc
      .tuple(fc.array(fc.constantFrom("", "a", "b", "$SYS", "$x", "+"), { maxLength: 4 }), fc.boolean())
      .map(([ls, multi]) => (multi ? [...ls, "#"] : ls).join("/"))
      .filter((f) => f.length > 0)
    const key = fc.constantFrom("k1", "k2", "k3")
    const op = fc.oneof(
      { weight: 4, arbitrary: fc.record({ op: fc.constant("add" as const), filter: fc.nat(), key, value: fc.nat() }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant("remove" as const), filter: fc.nat(), key }) },
      { weight: 4, arbitrary: fc.record({ op: fc.constant("match" as const), topic: fc.nat() }) }
    )
    const scenario = {
      filters: fc.array(filterArb, { minLength: 1, maxLength: 10 }),
      topics: fc.array(topicArb, { minLength: 1, maxLength: 6 }),
      ops: fc.array(op, { maxLength: 80 })
    }

    for (const [name, options] of configs) {
      it.prop(
        name,
        scenario,
        ({ filters, topics, ops }) => {
          const trie = new TopicTrie<number>(options)
          const model = new Map<string, Map<string, number>>() // filter -> key -> value
          const check = (topic: string) => {
            const expected: Array<Hit> = []
            for (const [filter, keys] of model) {
              if (matchTopic(filter, topic)) for (const [key, value] of keys) expected.push([filter, key, value])
            }
            expect(hits(trie, topic), topic).toEqual(expected.sort(compareHits))
          }
          for (const o of ops) {
            if (o.op === "match") {
              check(topics[o.topic % topics.length])
              continue
            }
            const filter = filters[o.filter % filters.length]
            const keys = model.get(filter)
            if (o.op === "add") {
              expect(trie.add(filter, o.key, o.value)).toBe(keys?.get(o.key))
              if (keys) keys.set(o.key, o.value)
              else model.set(filter, new Map([[o.key, o.value]]))
            } else {
              expect(trie.remove(filter, o.key)).toBe(keys?.get(o.key))
              keys?.delete(o.key)
              if (keys?.size === 0) model.delete(filter)
            }
          }
          for (const topic of topics) check(topic)
          let size = 0
          for (const [filter, keys] of model) {
            for (const [key, value] of keys) expect(trie.get(filter, key)).toBe(value)
            size += keys.size
          }
          expect(trie.size).toBe(size)
          expect([...trie.filters()].sort()).toEqual([...model.keys()].sort())
          // remove everything: the trie must be empty, not merely without entries
          for (const [filter, keys] of model) for (const key of keys.keys()) trie.remove(filter, key)
          expect(trie.size).toBe(0)
          expect(trie.nodeCount()).toBe(0)
          for (const topic of topics) expect(hits(trie, topic)).toEqual([])
        },
        { fastCheck: { seed: 1_883_051, numRuns: 500 } }
      )
    }
  })
})
