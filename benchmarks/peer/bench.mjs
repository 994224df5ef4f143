// Throughput driver for the TypeScript original (npm `openworkflow`).
//
// benchmarks/peer/openworkflow_ts.py copies this file next to a node_modules
// folder holding the pinned package (and its `postgres` peer) and runs
//
//   node bench.mjs --backend postgres --url URL [--schema S] [options]
//   node bench.mjs --backend sqlite --path FILE [options]
//
// Options (each also readable from the environment variable in brackets):
//   --backend      postgres | sqlite                     [OW_BENCH_BACKEND]
//   --url          PostgreSQL URL (postgres)             [OW_BENCH_URL]
//   --path         database file (sqlite)                [OW_BENCH_PATH]
//   --schema       PostgreSQL schema (default: the package's, "openworkflow")
//                                                       [OW_BENCH_SCHEMA]
//   --namespace    namespace id (default: a random UUID) [OW_BENCH_NAMESPACE]
//   --runs         workflow runs N (default 1000)        [OW_BENCH_RUNS]
//   --concurrency  worker concurrency C (default 100)    [OW_BENCH_CONCURRENCY]
//   --steps        no-op steps per run S (default 4)     [OW_BENCH_STEPS]
//   --timeout-s    give up waiting after this many seconds (default 600)
//                                                       [OW_BENCH_TIMEOUT_S]
//   --poll-ms      how often to read the run counts (default 10)
//                                                       [OW_BENCH_POLL_MS]
//   --keep-rows    leave the namespace's rows in PostgreSQL afterwards
//
// The workload is the package's own benchmark (benchmarks/basic upstream):
// one workflow whose S steps do nothing but return their index, N runs
// enqueued at once (phase 1), then one in-process Worker with concurrency C
// working them all off (phase 2). Completion is observed by polling the
// backend's per-status run counts every 10 ms (--poll-ms) rather than through
// handle.result(), which polls once a second and would blur the timing.
//
// Exactly one JSON line goes to stdout; progress and errors go to stderr,
// and any failure ends the process with a non-zero exit code.

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

import { OpenWorkflow } from "openworkflow";

const STOP_GRACE_MS = 10_000;

function log(message) {
  process.stderr.write(`[bench.mjs] ${message}\n`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function packageVersion(name) {
  // The package's "exports" hide package.json; this file sits next to node_modules.
  const manifest = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(manifest, "utf8")).version;
}

async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function positiveInteger(name, raw) {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function readConfig() {
  const { values } = parseArgs({
    options: {
      backend: { type: "string" },
      url: { type: "string" },
      path: { type: "string" },
      schema: { type: "string" },
      namespace: { type: "string" },
      runs: { type: "string" },
      concurrency: { type: "string" },
      steps: { type: "string" },
      "timeout-s": { type: "string" },
      "poll-ms": { type: "string" },
      "keep-rows": { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const env = process.env;
  const pick = (key, variable, fallback) => values[key] ?? env[variable] ?? fallback;

  const backend = pick("backend", "OW_BENCH_BACKEND", "");
  if (backend !== "postgres" && backend !== "sqlite") {
    throw new Error(`--backend must be "postgres" or "sqlite", got ${JSON.stringify(backend)}`);
  }
  const config = {
    backend,
    url: pick("url", "OW_BENCH_URL", ""),
    path: pick("path", "OW_BENCH_PATH", ""),
    schema: pick("schema", "OW_BENCH_SCHEMA", ""),
    namespace: pick("namespace", "OW_BENCH_NAMESPACE", "") || randomUUID(),
    runs: positiveInteger("--runs", pick("runs", "OW_BENCH_RUNS", "1000")),
    concurrency: positiveInteger(
      "--concurrency",
      pick("concurrency", "OW_BENCH_CONCURRENCY", "100"),
    ),
    steps: positiveInteger("--steps", pick("steps", "OW_BENCH_STEPS", "4")),
    timeoutMs: 1000 * Number(pick("timeout-s", "OW_BENCH_TIMEOUT_S", "600")),
    pollMs: positiveInteger("--poll-ms", pick("poll-ms", "OW_BENCH_POLL_MS", "10")),
    keepRows: values["keep-rows"],
  };
  if (!(config.timeoutMs > 0)) throw new Error("--timeout-s must be a positive number");
  if (backend === "postgres" && !config.url) throw new Error("postgres needs --url");
  if (backend === "sqlite" && !config.path) throw new Error("sqlite needs --path");
  return config;
}

async function connect(config) {
  if (config.backend === "postgres") {
    const { BackendPostgres } = await import("openworkflow/postgres");
    const options = { namespaceId: config.namespace };
    if (config.schema) options.schema = config.schema;
    return BackendPostgres.connect(config.url, options);
  }
  const { BackendSqlite } = await import("openworkflow/sqlite");
  return BackendSqlite.connect(config.path, { namespaceId: config.namespace });
}

async function waitAllCompleted(backend, runs, timeoutMs, pollMs) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const counts = await backend.countWorkflowRuns();
    if (counts.failed > 0 || counts.canceled > 0) {
      throw new Error(`runs did not complete: ${JSON.stringify(counts)}`);
    }
    if (counts.completed >= runs) return performance.now();
    if (performance.now() > deadline) {
      throw new Error(
        `only ${counts.completed} of ${runs} runs completed after ${timeoutMs / 1000} s: ` +
          JSON.stringify(counts),
      );
    }
    await sleep(pollMs);
  }
}

async function deleteRows(config) {
  // The runs' step attempts go with them (ON DELETE CASCADE).
  const { default: postgres } = await import("postgres");
  const sql = postgres(config.url, { max: 1, onnotice: () => {} });
  try {
    const schema = config.schema || "openworkflow";
    await sql`DELETE FROM ${sql(schema)}."workflow_runs" WHERE "namespace_id" = ${config.namespace}`;
  } finally {
    await sql.end();
  }
}

async function main() {
  const config = readConfig();
  log(
    `${config.backend}: ${config.runs} runs x ${config.steps} steps, ` +
      `concurrency ${config.concurrency}, namespace ${config.namespace}`,
  );
  const backend = await connect(config);
  // Completion is watched through a second backend (its own connection), as a
  // dashboard would, so the observer's count queries are not the engine's.
  const observer = await connect(config);
  let worker = null;
  let result;
  let succeeded = false;
  try {
    const client = new OpenWorkflow({ backend });
    const steps = config.steps;
    const bench = client.defineWorkflow({ name: "bench" }, async ({ step }) => {
      for (let index = 0; index < steps; index += 1) {
        await step.run({ name: `step-${index + 1}` }, () => index);
      }
      return { completed: true };
    });
    worker = client.newWorker({ concurrency: config.concurrency });

    // Phase 1: enqueue every run at once.
    const enqueueStart = performance.now();
    await Promise.all(Array.from({ length: config.runs }, () => bench.run()));
    const enqueueS = (performance.now() - enqueueStart) / 1000;
    log(`enqueued ${config.runs} runs in ${enqueueS.toFixed(3)} s`);

    // Phase 2: one worker works them off; CPU is counted over this phase only.
    const cpuStart = process.cpuUsage();
    const processStart = performance.now();
    await worker.start();
    const processEnd = await waitAllCompleted(
      observer,
      config.runs,
      config.timeoutMs,
      config.pollMs,
    );
    const cpu = process.cpuUsage(cpuStart);
    const processS = (processEnd - processStart) / 1000;
    log(
      `processed ${config.runs} runs in ${processS.toFixed(3)} s ` +
        `(${(config.runs / processS).toFixed(1)} workflows/s)`,
    );

    result = {
      engine: "openworkflow-ts",
      version: packageVersion("openworkflow"),
      node: process.version,
      backend: config.backend,
      runs: config.runs,
      steps_per_run: config.steps,
      concurrency: config.concurrency,
      enqueue_s: enqueueS,
      process_s: processS,
      peak_rss_mb: 0,
      cpu_user_s: cpu.user / 1e6,
      cpu_sys_s: cpu.system / 1e6,
    };
    succeeded = true;
  } finally {
    // After a failure, runs may still be executing: do not wait on them for long.
    const grace = succeeded ? 60_000 : STOP_GRACE_MS;
    try {
      if (worker) await within(grace, worker.stop(), "worker.stop()");
      await within(grace, backend.stop(), "backend.stop()");
      await within(grace, observer.stop(), "observer.stop()");
    } catch (error) {
      if (succeeded) throw error;
      log(`while stopping after a failure: ${error?.message ?? error}`);
    }
  }
  if (config.backend === "postgres" && !config.keepRows) await deleteRows(config);
  result.peak_rss_mb = process.resourceUsage().maxRSS / 1024;
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

try {
  await main();
} catch (error) {
  log(`failed: ${error?.stack ?? error}`);
  process.exit(1); // leftover timers or sockets must not keep a failed run alive
}
