#!/usr/bin/env node
// `npm run bench`: ipc-ckpt save and restore (CLI and API) side by side with a raw C baseline making
// the same system calls, each row on the same namespace contents in fresh IPC namespaces.
// Usage: npm run bench [-- --quick] [-- --out FILE] [-- --only NAME,NAME] [-- --baseline-only] [-- --no-codec]
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const CLI = path.join(REPO, 'bin', 'ipc-ckpt.js');
const API_WORKER = path.join(__dirname, 'bench-api-worker.js');
const CODEC_WORKER = path.join(__dirname, 'bench-codec.js');
const BASELINE_SOURCE = path.join(__dirname, 'bench-baseline.c');
const API_ENTRY = path.join(REPO, 'dist', 'lib', 'index.js');

const KIB = 1024;
const MIB = 1024 * KIB;
// The kernel's defaults in a fresh IPC namespace; rows raise them only where their messages need it.
const DEFAULT_MSGMAX = 8192;
const DEFAULT_MSGMNB = 16384;
// A child that runs longer than this is reported as hung rather than waited on forever.
const CHILD_TIMEOUT_MS = 15 * 60 * 1000;

/**
 * The namespace contents of each row. msgmax/msgmnb are raised in the source namespace when the
 * messages need it; `save: false` rows are restore-only (their image comes from the encoder, because
 * a MSG_COPY dump of 1M messages is O(n^2): hours).
 */
const FULL_ROWS = [
  { name: '1k x 64 B', queues: 1, messages: 1000, size: 64, msgmaxBufferProbe: true },
  { name: '10k x 64 B', queues: 1, messages: 10000, size: 64, msgmaxBufferProbe: true, repeats: 7 },
  { name: '30k x 64 B', queues: 1, messages: 30000, size: 64 },
  { name: '1k x 64 KiB', queues: 1, messages: 1000, size: 64 * KIB },
  { name: '100 queues x 100 x 64 B', queues: 100, messages: 100, size: 64, msgmaxBufferProbe: true },
  { name: '1000 queues x 100 x 16 B', queues: 1000, messages: 100, size: 16 },
  { name: '2k x 8 KiB', queues: 1, messages: 2000, size: 8 * KIB },
  { name: '1 queue, empty', queues: 1, messages: 0, size: 64 },
  { name: '32,000 queues x 1 x 64 B', queues: 32000, messages: 1, size: 64, repeats: 3 },
  { name: '1k x 64 B, msgmax 1 MiB', queues: 1, messages: 1000, size: 64, msgmax: MIB, msgmaxBufferProbe: true },
  { name: '1M x 16 B', queues: 1, messages: 1000000, size: 16, save: false },
  { name: '1 GiB: 16 queues x 1024 x 64 KiB', queues: 16, messages: 1024, size: 64 * KIB, repeats: 1, ioBaseline: true },
];
const QUICK_ROWS = [
  { name: '1k x 64 B', queues: 1, messages: 1000, size: 64, msgmaxBufferProbe: true },
  { name: '10k x 64 B', queues: 1, messages: 10000, size: 64 },
  { name: '100 x 64 KiB', queues: 1, messages: 100, size: 64 * KIB },
  { name: '100 queues x 100 x 64 B', queues: 100, messages: 100, size: 64 },
  { name: '1000 queues x 100 x 16 B', queues: 1000, messages: 100, size: 16 },
  { name: '2k x 8 KiB', queues: 1, messages: 2000, size: 8 * KIB },
  { name: '1 queue, empty', queues: 1, messages: 0, size: 64 },
  { name: '32,000 queues x 1 x 64 B', queues: 32000, messages: 1, size: 64, repeats: 3 },
  { name: '1k x 64 B, msgmax 1 MiB', queues: 1, messages: 1000, size: 64, msgmax: MIB, msgmaxBufferProbe: true },
  { name: '100k x 16 B', queues: 1, messages: 100000, size: 16, save: false },
  { name: '64 MiB: 16 queues x 64 x 64 KiB', queues: 16, messages: 64, size: 64 * KIB, repeats: 3, ioBaseline: true },
];

function parseArguments(argv) {
  const options = { quick: false, out: path.join(REPO, 'bench-results.json'), only: null, baselineOnly: false, codec: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') options.quick = true;
    else if (arg === '--baseline-only') options.baselineOnly = true;
    else if (arg === '--no-codec') options.codec = false;
    else if (arg === '--out') options.out = path.resolve(argv[++i] ?? '');
    else if (arg === '--only') options.only = (argv[++i] ?? '').split(',').map((s) => s.trim().toLowerCase());
    else {
      process.stderr.write(`bench: unknown option ${arg}\n`);
      process.exit(2);
    }
  }
  return options;
}

function log(text) {
  process.stderr.write(`${text}\n`);
}

// ---------------------------------------------------------------------------------------------
// Fresh IPC namespaces: an `unshare --ipc sleep infinity` holder per use, killed afterwards.

const liveHolders = new Set();

async function createNamespace() {
  const child = spawn('unshare', ['--ipc', 'sleep', 'infinity'], { stdio: 'ignore' });
  liveHolders.add(child);
  const host = fs.readlinkSync('/proc/self/ns/ipc');
  for (let attempt = 0; attempt < 1000; attempt++) {
    try {
      if (fs.readlinkSync(`/proc/${child.pid}/ns/ipc`) !== host) {
        return { path: `/proc/${child.pid}/ns/ipc`, destroy: () => destroyHolder(child) };
      }
    } catch {
      // unshare has not exec'd yet
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  await destroyHolder(child);
  throw new Error('unshare --ipc never left the host namespace');
}

async function destroyHolder(child) {
  liveHolders.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

function killAllHolders() {
  for (const child of liveHolders) child.kill('SIGKILL');
  liveHolders.clear();
}

// ---------------------------------------------------------------------------------------------
// Child processes

function runChild(argv, { input } = {}) {
  const result = spawnSync(argv[0], argv.slice(1), {
    cwd: REPO,
    encoding: 'utf8',
    maxBuffer: 64 * MIB,
    timeout: CHILD_TIMEOUT_MS,
    input,
  });
  if (result.error) throw new Error(`${argv.join(' ')}: ${result.error.message}`);
  return result;
}

function lastJsonLine(text, what) {
  const lines = text.trim().split('\n').filter((line) => line.startsWith('{'));
  if (lines.length === 0) throw new Error(`${what} printed no JSON result`);
  return JSON.parse(lines[lines.length - 1]);
}

class Baseline {
  constructor(binary, workDir) {
    this.binary = binary;
    this.workDir = workDir;
  }

  static build(workDir) {
    const binary = path.join(workDir, 'bench-baseline');
    const result = runChild(['gcc', '-O2', '-Wall', '-o', binary, BASELINE_SOURCE]);
    if (result.status !== 0) throw new Error(`gcc failed:\n${result.stderr}`);
    return new Baseline(binary, workDir);
  }

  /** Runs one baseline mode in a namespace; resolves to its JSON report. */
  call(mode, ns, args = []) {
    const argv = [this.binary, mode, '--ns', ns, ...args];
    const result = runChild(argv);
    if (result.status !== 0) throw new Error(`${argv.join(' ')} exited ${result.status}: ${result.stderr.trim()}`);
    return lastJsonLine(result.stdout, `bench-baseline ${mode}`);
  }

  /** Runs any command under the baseline's `run` mode: wall time and peak RSS (wait4's ru_maxrss). */
  measure(argv, { stdoutTo } = {}) {
    const report = path.join(this.workDir, 'run-report.json');
    const redirect = stdoutTo ? ['--stdout', stdoutTo] : [];
    const result = runChild([this.binary, 'run', '--report', report, ...redirect, '--', ...argv]);
    const run = JSON.parse(fs.readFileSync(report, 'utf8'));
    fs.rmSync(report);
    return { ...run, stdout: result.stdout, stderr: result.stderr };
  }
}

function contentArguments(row) {
  return [
    '--queues', String(row.queues),
    '--messages', String(row.messages),
    '--size', String(row.size),
    '--msgmax', String(msgmaxFor(row)),
    '--msgmnb', String(msgmnbFor(row)),
  ];
}

function msgmaxFor(row) {
  return Math.max(DEFAULT_MSGMAX, row.size, row.msgmax ?? 0);
}

/** Room for every message of one queue: bytes, and (the kernel counts both against qbytes) messages. */
function msgmnbFor(row) {
  return Math.max(DEFAULT_MSGMNB, row.messages * row.size, row.messages);
}

/**
 * Median over repeated samples; the repeat count follows the baseline's own time so short rows are not
 * noise, unless the row sets its own (more for a target row, one for a row that takes minutes).
 */
function repeatsFor(row, baselineSeconds) {
  if (row.repeats !== undefined) return row.repeats;
  if (baselineSeconds < 0.2) return 5;
  if (baselineSeconds < 2) return 3;
  return 1;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function summarize(row, operation, tool, samples, extra = {}) {
  const seconds = median(samples.map((s) => s.seconds));
  const bytes = row.queues * row.messages * row.size;
  const messages = row.queues * row.messages;
  return {
    row: row.name,
    operation,
    tool,
    messages,
    bytes,
    seconds,
    messagesPerSecond: messages / seconds,
    megabytesPerSecond: bytes / 1e6 / seconds,
    peakRssKb: Math.max(...samples.map((s) => s.maxrssKb)),
    samples: samples.map((s) => s.seconds),
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------
// ipc-ckpt, through the CLI and through the API (each call in its own process for its peak RSS)

function detectIpcCkpt(baselineOnly) {
  if (baselineOnly) return { cli: false, api: false, why: '--baseline-only' };
  const help = runChild([process.execPath, CLI, 'save', '--help']);
  const cli = help.status === 0;
  let api = false;
  if (fs.existsSync(API_ENTRY)) {
    const probe = runChild([process.execPath, '-e', `const a=require(${JSON.stringify(API_ENTRY)});process.exit(typeof a.save==='function'&&typeof a.restore==='function'?0:1)`]);
    api = probe.status === 0;
  }
  const why = cli && api ? '' : `CLI ${cli ? 'ready' : 'not ready'}, API ${api ? 'ready' : 'not ready'} (dist/lib/index.js)`;
  return { cli, api, why };
}

const NODE_START = 'node -e 0';
const C_WRITES = 'C baseline, writes + fsync';
const C_READS = 'C baseline, reads the image';

/** Node's own start, measured in the same turns as the row's other tools. */
function nodeStartTool(baseline) {
  return { name: NODE_START, measure: () => baseline.measure([process.execPath, '-e', '0']) };
}

function measureCli(baseline, args, measureOptions) {
  const run = baseline.measure([process.execPath, CLI, ...args], measureOptions);
  if (run.exitCode !== 0) throw new Error(`ipc-ckpt ${args.join(' ')} exited ${run.exitCode}: ${run.stderr.trim()}`);
  return run;
}

function measureApi(baseline, operation, ns, imageFile) {
  const run = baseline.measure([process.execPath, API_WORKER, operation, ns, imageFile]);
  if (run.exitCode !== 0) throw new Error(`API ${operation} exited ${run.exitCode}: ${run.stderr.trim()}`);
  const report = lastJsonLine(run.stdout, 'bench-api-worker');
  // The call's own time (node startup and module loading excluded); the process's peak RSS.
  return { seconds: report.seconds, maxrssKb: run.maxrssKb, processSeconds: run.seconds };
}

/** A restore is only counted if the target then holds every queue, message and byte of the row. */
function checkRestored(baseline, ns, row, who) {
  const found = baseline.call('count', ns);
  const want = { queues: row.queues, messages: row.queues * row.messages, bytes: row.queues * row.messages * row.size };
  for (const key of Object.keys(want)) {
    if (found[key] !== want[key]) {
      throw new Error(`${who} restore of ${row.name}: namespace holds ${found[key]} ${key}, expected ${want[key]}`);
    }
  }
}

async function withNamespace(use) {
  const ns = await createNamespace();
  try {
    return await use(ns.path);
  } finally {
    await ns.destroy();
  }
}

/**
 * The tools of one row are measured in turns (baseline, then each ipc-ckpt path, then again), so a
 * noisy neighbour on a shared machine slows every tool of a row alike rather than one of them.
 * A row measured 3 times or more first runs each tool once unrecorded (as `hyperfine --warmup 1`): the
 * first row of a bench otherwise paid for cold caches, 5 ms over the same contents measured later.
 */
async function measureInTurns(tools, repeats) {
  const samples = tools.map(() => []);
  if (repeats >= 3) for (const tool of tools) await tool.measure();
  for (let round = 0; round < repeats; round++) {
    for (let t = 0; t < tools.length; t++) samples[t].push(await tools[t].measure());
  }
  return samples;
}

async function benchSave(baseline, ipcCkpt, row, workDir) {
  const results = [];
  let imageFile = null;
  await withNamespace(async (ns) => {
    const filled = baseline.call('fill', ns, contentArguments(row));
    log(`  filled ${row.name}: ${filled.messages} messages in ${(filled.seconds * 1000).toFixed(1)} ms`);
    // ipc-ckpt certifies a copy only of a queue unchanged since before the current second (it waits
    // for the next one otherwise); measure the copy, not that one-time wait after the fill.
    await new Promise((resolve) => setTimeout(resolve, 1010 - (Date.now() % 1000)));
    const first = baseline.call('save', ns);
    const repeats = repeatsFor(row, first.seconds);
    const cliImage = path.join(workDir, `${slug(row.name)}.img`);
    const apiImage = path.join(workDir, `${slug(row.name)}.api.img`);
    const tools = [{ name: 'C baseline', measure: () => baseline.call('save', ns) }, nodeStartTool(baseline)];
    // The floor of a save that writes: the same copies, every byte written to a file and fsync'ed.
    if (row.ioBaseline) tools.push({ name: C_WRITES, measure: () => baseline.call('save', ns, ['--write', path.join(workDir, 'baseline.img')]) });
    if (row.msgmaxBufferProbe) tools.push({ name: 'C baseline, msgmax buffer', measure: () => baseline.call('save', ns, ['--buffer', 'msgmax']) });
    if (ipcCkpt.cli) tools.push({ name: 'ipc-ckpt CLI', measure: () => measureCli(baseline, ['save', '--ns', ns, '-o', cliImage]) });
    // The same save to stdout into /dev/null: no file, no fsync, to tell the codec's cost from the disk's.
    if (ipcCkpt.cli && row.size >= 64 * KIB) {
      tools.push({ name: 'ipc-ckpt CLI, -o - >/dev/null', measure: () => measureCli(baseline, ['save', '--ns', ns, '-o', '-'], { stdoutTo: '/dev/null' }) });
    }
    if (ipcCkpt.api) tools.push({ name: 'ipc-ckpt API', measure: () => measureApi(baseline, 'save', ns, apiImage) });
    const samples = await measureInTurns(tools, repeats);
    tools.forEach((tool, t) => {
      const runs = samples[t];
      const extra = {};
      if (tool.name === 'C baseline') {
        extra.copyMicrosPerMessageBySlice = runs[runs.length - 1].copyMicrosPerMessageBySlice;
        extra.bufferSize = runs[runs.length - 1].bufferSize;
      }
      if (tool.name === 'ipc-ckpt CLI') extra.imageBytes = fs.statSync(cliImage).size;
      if (tool.name === 'ipc-ckpt API') {
        extra.imageBytes = fs.statSync(apiImage).size;
        extra.processSeconds = median(runs.map((r) => r.processSeconds));
      }
      results.push(summarize(row, 'save', tool.name, runs, extra));
    });
    if (ipcCkpt.cli) imageFile = cliImage;
    else if (ipcCkpt.api) imageFile = apiImage;
    if (ipcCkpt.cli && ipcCkpt.api) fs.rmSync(apiImage);
  });
  return { results, imageFile };
}

async function benchRestore(baseline, ipcCkpt, row, imageFile) {
  const inFreshNamespace = (who, restore) => () =>
    withNamespace(async (ns) => {
      const run = restore(ns);
      checkRestored(baseline, ns, row, who);
      return run;
    });
  const tools = [{ name: 'C baseline', measure: inFreshNamespace('C baseline', (ns) => baseline.call('restore', ns, contentArguments(row))) }, nodeStartTool(baseline)];
  // The floor of a restore that reads: every body is read from the image file before it is sent.
  if (row.ioBaseline && imageFile !== null) {
    tools.push({ name: C_READS, measure: inFreshNamespace(C_READS, (ns) => baseline.call('restore', ns, [...contentArguments(row), '--read', imageFile])) });
  }
  if (imageFile !== null && ipcCkpt.cli) {
    tools.push({ name: 'ipc-ckpt CLI', measure: inFreshNamespace('ipc-ckpt CLI', (ns) => measureCli(baseline, ['restore', '--ns', ns, '-i', imageFile])) });
  }
  if (imageFile !== null && ipcCkpt.api) {
    tools.push({ name: 'ipc-ckpt API', measure: inFreshNamespace('ipc-ckpt API', (ns) => measureApi(baseline, 'restore', ns, imageFile)) });
  }
  const first = await tools[0].measure();
  const samples = await measureInTurns(tools, repeatsFor(row, first.seconds));
  const imageBytes = imageFile === null ? undefined : fs.statSync(imageFile).size;
  return tools.map((tool, t) => {
    const runs = samples[t];
    const extra = tool.name === 'C baseline' ? {} : { imageBytes };
    if (tool.name === 'ipc-ckpt API') extra.processSeconds = median(runs.map((r) => r.processSeconds));
    return summarize(row, 'restore', tool.name, runs, extra);
  });
}

/** An image of a row too large to dump with MSG_COPY, written by lib/image's encoder (see bench-codec.js). */
function writeImageWithEncoder(row, imageFile) {
  const result = runChild([process.execPath, CODEC_WORKER, 'write-image', imageFile,
    String(row.queues), String(row.messages), String(row.size), String(msgmaxFor(row)), String(msgmnbFor(row))]);
  if (result.status !== 0) throw new Error(`bench-codec write-image failed: ${result.stderr.trim()}`);
  return lastJsonLine(result.stdout, 'bench-codec write-image');
}

function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function withRatios(results) {
  for (const result of results) {
    const base = results.find((r) => r.row === result.row && r.operation === result.operation && r.tool === 'C baseline');
    result.ratio = base ? result.seconds / base.seconds : null;
  }
  return results;
}

/**
 * Per row and operation: the C floor, `node -e 0`, the API, the CLI, CLI / (floor + node start) and
 * API / floor (the issue's targets: <= 1.3 and <= 1.2).
 */
function rowRatios(results) {
  const rows = [];
  for (const floor of results.filter((r) => r.tool === 'C baseline')) {
    const pick = (tool) => find(results, floor.row, floor.operation, tool);
    const node = pick(NODE_START);
    const api = pick('ipc-ckpt API');
    const cli = pick('ipc-ckpt CLI');
    if (!node) continue;
    rows.push({
      row: floor.row,
      operation: floor.operation,
      floorSeconds: floor.seconds,
      nodeSeconds: node.seconds,
      apiSeconds: api ? api.seconds : null,
      cliSeconds: cli ? cli.seconds : null,
      cliOverFloorPlusNode: cli ? cli.seconds / (floor.seconds + node.seconds) : null,
      apiOverFloor: api ? api.seconds / floor.seconds : null,
    });
  }
  return rows;
}

function rowRatiosTable(rows) {
  const lines = [
    '| Contents | Op | C floor | node -e 0 | API | CLI | CLI / (floor + node) | API / floor |',
    '|---|---|--:|--:|--:|--:|--:|--:|',
  ];
  const time = (s) => (s === null ? '' : formatSeconds(s));
  const ratio = (x, limit) => (x === null ? '' : `${x.toFixed(2)} ${x <= limit ? '(met)' : '(missed)'}`);
  for (const r of rows) {
    lines.push(`| ${r.row} | ${r.operation} | ${time(r.floorSeconds)} | ${time(r.nodeSeconds)} | ${time(r.apiSeconds)} | ${time(r.cliSeconds)} | ` +
      `${ratio(r.cliOverFloorPlusNode, 1.3)} | ${ratio(r.apiOverFloor, 1.2)} |`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Output

function formatSeconds(seconds) {
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

function formatRate(perSecond) {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)} k`;
  return perSecond.toFixed(0);
}

function markdownTable(results) {
  const lines = [
    '| Contents | Op | Tool | Time | Messages/s | MB/s | Peak RSS | x baseline |',
    '|---|---|---|--:|--:|--:|--:|--:|',
  ];
  for (const r of results) {
    lines.push(`| ${r.row} | ${r.operation} | ${r.tool} | ${formatSeconds(r.seconds)} | ${formatRate(r.messagesPerSecond)} | ` +
      `${r.megabytesPerSecond.toFixed(1)} | ${(r.peakRssKb / 1024).toFixed(1)} MiB | ${r.ratio === null ? '' : r.ratio.toFixed(2)} |`);
  }
  return lines.join('\n');
}

function msgCopyCostTable(results) {
  const lines = [
    '| Messages in the queue | Dump time (C) | us per MSG_COPY, first tenth | us per MSG_COPY, last tenth |',
    '|--:|--:|--:|--:|',
  ];
  for (const r of results) {
    if (r.tool !== 'C baseline' || r.operation !== 'save' || !r.copyMicrosPerMessageBySlice) continue;
    const slices = r.copyMicrosPerMessageBySlice;
    lines.push(`| ${r.row} | ${formatSeconds(r.seconds)} | ${slices[0].toFixed(1)} | ${slices[slices.length - 1].toFixed(1)} |`);
  }
  return lines.join('\n');
}

function machineDescription() {
  const cpus = os.cpus();
  let commit = '';
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' });
  if (git.status === 0) commit = git.stdout.trim();
  return {
    kernel: os.release(),
    cpu: cpus.length ? cpus[0].model : 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    // Other work on a shared machine shows here: the 1/5/15-minute load averages when the run ended.
    loadAverage: os.loadavg().map((load) => Number(load.toFixed(2))),
    node: process.version,
    commit,
  };
}

function find(results, row, operation, tool) {
  return results.find((r) => r.row === row && r.operation === operation && r.tool === tool);
}

/** The issue's targets, judged from this run (reported, never asserted). */
function judgeTargets(results, codec) {
  const targets = [];
  const ratioTarget = (name, row, operation, limit) => {
    for (const tool of ['ipc-ckpt API', 'ipc-ckpt CLI']) {
      const r = find(results, row, operation, tool);
      if (!r) continue;
      targets.push({ target: `${name} (${tool})`, limit: `<= ${limit}x`, measured: `${r.ratio.toFixed(2)}x`, met: r.ratio <= limit });
    }
  };
  ratioTarget('save at 10k messages within 1.10x of C', '10k x 64 B', 'save', 1.1);
  ratioTarget('restore at 1M messages within 1.5x of C', '1M x 16 B', 'restore', 1.5);
  // Against the C loops that also write (read) the same bytes.
  for (const r of results.filter((x) => x.tool.startsWith('ipc-ckpt'))) {
    const io = find(results, r.row, r.operation, r.operation === 'save' ? C_WRITES : C_READS);
    if (!io || r.tool.includes('/dev/null')) continue;
    const ratio = r.seconds / io.seconds;
    targets.push({ target: `${r.row} ${r.operation} within 2x of the C loop that ${r.operation === 'save' ? 'writes' : 'reads'} (${r.tool})`, limit: '<= 2x', measured: `${ratio.toFixed(2)}x`, met: ratio <= 2 });
  }
  for (const r of results.filter((x) => x.row.startsWith('32,000 queues') && x.tool.startsWith('ipc-ckpt'))) {
    targets.push({ target: `32,000 queues ${r.operation} under 1 s (${r.tool})`, limit: '< 1 s', measured: formatSeconds(r.seconds), met: r.seconds < 1 });
  }
  if (codec) {
    for (const key of ['encodeMemory', 'decodeMemory', 'encodeFile', 'decodeFile']) {
      const c = codec[key];
      if (!c) continue;
      targets.push({ target: `image ${c.label}, 64 KiB messages`, limit: '>= 1 GB/s', measured: `${c.gigabytesPerSecond.toFixed(2)} GB/s`, met: c.gigabytesPerSecond >= 1 });
    }
  }
  const bigRow = '1 GiB: 16 queues x 1024 x 64 KiB';
  for (const r of results.filter((x) => x.row === bigRow && x.tool.startsWith('ipc-ckpt'))) {
    targets.push({ target: `peak RSS of ${r.tool} ${r.operation}, 1 GiB image`, limit: '< 150 MB', measured: `${(r.peakRssKb * 1024 / 1e6).toFixed(0)} MB`, met: r.peakRssKb * 1024 < 150e6 });
  }
  if (codec) {
    for (const key of ['encodeFile', 'decodeFile']) {
      const c = codec[key];
      if (!c) continue;
      targets.push({ target: `peak RSS of image ${c.label}, ${(c.bytes / 1e9).toFixed(2)} GB`, limit: '< 150 MB', measured: `${(c.peakRssKb * 1024 / 1e6).toFixed(0)} MB`, met: c.peakRssKb * 1024 < 150e6 });
    }
  }
  return targets;
}

function targetsTable(targets) {
  const lines = ['| Target | Limit | Measured | Met |', '|---|--:|--:|:-:|'];
  for (const t of targets) lines.push(`| ${t.target} | ${t.limit} | ${t.measured} | ${t.met ? 'yes' : 'no'} |`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const options = parseArguments(process.argv.slice(2));
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ipc-ckpt-bench-'));
  const cleanup = () => {
    killAllHolders();
    fs.rmSync(workDir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  process.on('exit', killAllHolders);

  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const startedAt = new Date().toISOString();
  try {
    const baseline = Baseline.build(workDir);
    const ipcCkpt = detectIpcCkpt(options.baselineOnly);
    if (ipcCkpt.why) log(`bench: ipc-ckpt rows skipped: ${ipcCkpt.why}`);
    const startup = baseline.measure([process.execPath, '-e', '0']);

    let rows = options.quick ? QUICK_ROWS : FULL_ROWS;
    if (options.only) rows = rows.filter((row) => options.only.some((name) => row.name.toLowerCase().includes(name)));
    const results = [];
    for (const row of rows) {
      log(`bench: ${row.name}`);
      let imageFile = null;
      if (row.save !== false) {
        const saved = await benchSave(baseline, ipcCkpt, row, workDir);
        results.push(...saved.results);
        imageFile = saved.imageFile;
      } else if (ipcCkpt.cli || ipcCkpt.api) {
        imageFile = path.join(workDir, `${slug(row.name)}.img`);
        const written = writeImageWithEncoder(row, imageFile);
        log(`  image written by the encoder: ${written.bytes} bytes in ${formatSeconds(written.seconds)}`);
      }
      results.push(...(await benchRestore(baseline, ipcCkpt, row, imageFile)));
      if (imageFile) fs.rmSync(imageFile, { force: true });
      for (const r of results.filter((x) => x.row === row.name)) {
        log(`  ${r.operation.padEnd(8)} ${r.tool.padEnd(26)} ${formatSeconds(r.seconds).padStart(10)}  peak RSS ${(r.peakRssKb / 1024).toFixed(1)} MiB`);
      }
    }
    withRatios(results);

    let codec = null;
    if (options.codec && !options.baselineOnly) {
      codec = runCodecBench(options.quick, workDir);
    }

    const targets = judgeTargets(results, codec);
    const ratios = rowRatios(results);
    const report = {
      command,
      startedAt,
      machine: machineDescription(),
      nodeStartupSeconds: startup.seconds,
      ipcCkpt: { cli: ipcCkpt.cli, api: ipcCkpt.api },
      units: { MB: '1e6 bytes (message bodies only)', peakRss: 'KiB, ru_maxrss of the measuring process' },
      results,
      rowRatios: ratios,
      codec,
      targets,
    };
    fs.writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);

    const m = report.machine;
    console.log(`\n${command}  (Linux ${m.kernel}, ${m.cpu}, ${m.cores} cores, Node ${m.node}, commit ${m.commit}, load average ${m.loadAverage.join(' ')})\n`);
    console.log(markdownTable(results));
    console.log('\nPer row: CLI <= 1.3 x (C floor + `node -e 0`) and API <= 1.2 x C floor are the targets (reported, never asserted).\n');
    console.log(rowRatiosTable(ratios));
    console.log(`\nMSG_COPY walks the queue from its head on every call: a non-destructive dump is O(n^2).\n`);
    console.log(msgCopyCostTable(results));
    if (codec) {
      console.log('\nImage codec, 64 KiB messages:\n');
      console.log(codecTable(codec));
    }
    if (targets.length) {
      console.log('\nTargets (reported, never asserted):\n');
      console.log(targetsTable(targets));
    }
    console.log(`\nCLI times include Node startup (${formatSeconds(startup.seconds)} for \`node -e 0\`); API times are the call alone.`);
    console.log(`Results written to ${options.out}`);
  } finally {
    cleanup();
  }
}

/** Image codec throughput on 64 KiB messages: in memory, and through a file of about 1 GB (256 MB with --quick). */
function runCodecBench(quick, workDir) {
  const bytes = quick ? 256 * MIB : 1024 * MIB;
  const imageFile = path.join(workDir, 'codec.img');
  const phases = [
    { key: 'encodeMemory', label: 'encode (records + SHA-256), in memory', argv: ['encode-memory', String(bytes)] },
    { key: 'encodeFile', label: 'encode to a file (no fsync)', argv: ['write-image', imageFile, '16', String(bytes / (16 * 64 * KIB)), String(64 * KIB), String(64 * KIB), String(bytes / 16)] },
    { key: 'decodeMemory', label: 'decode (records + SHA-256), in memory', argv: ['decode-memory', String(bytes)] },
    { key: 'decodeFile', label: 'decode from a file', argv: ['decode-file', imageFile] },
    { key: 'sha256', label: 'SHA-256 alone (node:crypto)', argv: ['sha256', String(bytes)] },
  ];
  const codec = {};
  for (const phase of phases) {
    const result = runChild([process.execPath, CODEC_WORKER, ...phase.argv]);
    if (result.status !== 0) {
      log(`bench: image codec ${phase.key} skipped: ${result.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
      continue;
    }
    const report = lastJsonLine(result.stdout, `bench-codec ${phase.argv[0]}`);
    codec[phase.key] = { label: phase.label, ...report, gigabytesPerSecond: report.bytes / 1e9 / report.seconds, peakRssKb: report.vmHwmKb };
    if (report.recordsSeconds !== undefined) {
      codec.encodeRecordsOnly = { label: 'encode, records only (no SHA-256)', bytes: report.bytes, seconds: report.recordsSeconds, gigabytesPerSecond: report.bytes / 1e9 / report.recordsSeconds, peakRssKb: report.vmHwmKb };
    }
    log(`  codec ${phase.label}: ${(report.bytes / 1e6).toFixed(0)} MB in ${formatSeconds(report.seconds)}, peak RSS ${(report.vmHwmKb / 1024).toFixed(1)} MiB`);
  }
  fs.rmSync(imageFile, { force: true });
  return Object.keys(codec).length ? codec : null;
}

function codecTable(codec) {
  const lines = ['| Path | Image size | Time | GB/s | Peak RSS |', '|---|--:|--:|--:|--:|'];
  for (const key of ['encodeMemory', 'encodeRecordsOnly', 'decodeMemory', 'encodeFile', 'decodeFile', 'sha256']) {
    const c = codec[key];
    if (!c) continue;
    lines.push(`| ${c.label} | ${(c.bytes / 1e6).toFixed(0)} MB | ${formatSeconds(c.seconds)} | ${c.gigabytesPerSecond.toFixed(2)} | ${(c.peakRssKb / 1024).toFixed(1)} MiB |`);
  }
  return lines.join('\n');
}

main().catch((error) => {
  process.stderr.write(`bench: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
