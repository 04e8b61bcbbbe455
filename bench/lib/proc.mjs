// /proc readers: a process's CPU seconds (utime + stime) and VmRSS, the machine's CPU
// ticks, and whether something listens on a loopback TCP port. Linux only, as mqload.
// Also a free loopback port, from the kernel.
import { readFileSync } from 'node:fs'
import net from 'node:net'

const TICK = 100 // USER_HZ: /proc reports CPU time in 1/100 s on Linux

/** utime + stime of a process in seconds, or -1 when it is gone. */
export const cpuSeconds = (pid) => {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    // after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    return (Number(f[11]) + Number(f[12])) / TICK
  } catch {
    return -1
  }
}

/** VmRSS in KiB, or -1 when the process is gone. */
export const rssKb = (pid) => {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m ? Number(m[1]) : -1
  } catch {
    return -1
  }
}

/** Machine-wide CPU ticks (all cores) from /proc/stat. */
export const machineTicks = () => {
  const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
  return { user: user + nice, sys: system, irq: irq + softirq, steal: steal || 0, idle: idle + iowait }
}

/** Machine CPU between two samples, as % of one core (200 = both cores of a 2-core box). */
export const machineCpuPct = (a, b, seconds) => {
  const pct = (k) => Math.round(((b[k] - a[k]) / TICK / seconds) * 1000) / 10
  return { user: pct('user'), sys: pct('sys'), irq: pct('irq'), steal: pct('steal'), idle: pct('idle') }
}

/** Is a TCP socket in LISTEN state on this port (IPv4 or IPv6)? */
export const listening = (port) => {
  const hex = ':' + port.toString(16).toUpperCase().padStart(4, '0')
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text
    try {
      text = readFileSync(file, 'latin1')
    } catch {
      continue
    }
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/)
      if (f.length > 3 && f[3] === '0A' && f[1].endsWith(hex)) return true
    }
  }
  return false
}

export const alive = (pid) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** 1, 5 and 15 minute load averages: other work on the machine skews every number */
export const loadavg = () => readFileSync('/proc/loadavg', 'latin1').split(' ').slice(0, 3).map(Number)

/** The machine, for the report header. */
export const machine = () => {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'latin1')
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? 'unknown'
  const cores = cpuinfo.split('\n').filter((l) => l.startsWith('processor')).length
  const memKb = Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'latin1'))?.[1] ?? 0)
  let kernel = 'unknown'
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'latin1').trim()
  } catch {}
  return { model, cores, memGiB: Math.round((memKb / 1048576) * 10) / 10, kernel, node: process.version }
}

/** A loopback TCP port nothing listens on (the kernel's pick, released at once). */
export const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
