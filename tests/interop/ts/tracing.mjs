// Driver for the TypeScript side of tests/interop/test_tracing_interop.py.
//
// The test copies this file next to a node_modules folder holding the pinned
// `openworkflow` npm package (0.10+, which traces with OpenTelemetry), its
// `postgres` peer and the OpenTelemetry Node SDK, then runs
//
//   node tracing.mjs <command> [args...]
//
// with OW_URL, OW_SCHEMA and OW_NAMESPACE in the environment. A Node tracer
// provider (W3C propagator, async context) records every span in memory.
// Every line written to stdout is one JSON object ({"event": ...}); errors go
// to stderr and end the process with a non-zero exit code.
//
// Commands:
//   create <input>  inside an active span "ts-request", start a run of
//                   interop-trace (input is JSON); print the run and the spans
//   work <runId>    run a Worker until that run is terminal; print the run
//                   and the spans (with their links)

import { trace } from "@opentelemetry/api";
import {
  InMemorySpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-node";
import { OpenWorkflow, Worker, defineWorkflow } from "openworkflow";
import { BackendPostgres } from "openworkflow/postgres";

const TERMINAL = new Set(["completed", "failed", "canceled"]);

// The same workflow as `interop_trace` in test_tracing_interop.py: a step, a
// sleep (so a worker makes two passes), then a step.
export const interopTrace = defineWorkflow(
  { name: "interop-trace" },
  async ({ input, step }) => {
    const greeting = await step.run(
      { name: "greet" },
      () => `Hello, ${input.name}!`,
    );
    await step.sleep("nap", "1s");
    return await step.run({ name: "shout" }, () => greeting.toUpperCase());
  },
);

const exporter = new InMemorySpanExporter();
new NodeTracerProvider({
  spanProcessors: [new SimpleSpanProcessor(exporter)],
}).register();

function emit(event, fields) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function finishedSpans() {
  return exporter.getFinishedSpans().map((span) => ({
    name: span.name,
    kind: span.kind,
    traceId: span.spanContext().traceId,
    spanId: span.spanContext().spanId,
    parentSpanId: span.parentSpanContext?.spanId ?? span.parentSpanId ?? null,
    attributes: span.attributes,
    links: (span.links ?? []).map((link) => ({
      traceId: link.context.traceId,
      spanId: link.context.spanId,
    })),
  }));
}

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function connect() {
  return BackendPostgres.connect(requireEnv("OW_URL"), {
    schema: requireEnv("OW_SCHEMA"),
    namespaceId: requireEnv("OW_NAMESPACE"),
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitTerminal(backend, runId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const run = await backend.getWorkflowRun({ workflowRunId: runId });
    if (!run) throw new Error(`workflow run ${runId} does not exist`);
    if (TERMINAL.has(run.status)) return run;
    if (Date.now() > deadline) {
      throw new Error(`run ${runId} still ${run.status} after ${timeoutMs} ms`);
    }
    await sleep(25);
  }
}

const commands = {
  async create(inputJson) {
    const backend = await connect();
    try {
      const ow = new OpenWorkflow({ backend });
      const tracer = trace.getTracer("interop-test");
      const run = await tracer.startActiveSpan("ts-request", async (span) => {
        try {
          const handle = await ow.runWorkflow(
            interopTrace.spec,
            JSON.parse(inputJson),
          );
          return handle.workflowRun;
        } finally {
          span.end();
        }
      });
      emit("created", { run, spans: finishedSpans() });
    } finally {
      await backend.stop();
    }
  },

  async work(runId) {
    const backend = await connect();
    try {
      const worker = new Worker({ backend, workflows: [interopTrace] });
      await worker.start();
      let run;
      try {
        const timeoutMs = Number(process.env.OW_TIMEOUT_MS ?? 60000);
        run = await waitTerminal(backend, runId, timeoutMs);
      } finally {
        await worker.stop();
      }
      emit("finished", { run, spans: finishedSpans() });
    } finally {
      await backend.stop();
    }
  },
};

const [command, ...args] = process.argv.slice(2);
const handler = commands[command];
if (!handler) {
  process.stderr.write(`unknown command ${JSON.stringify(command)}\n`);
  process.exit(2);
}
try {
  await handler(...args);
} catch (error) {
  process.stderr.write(`${error?.stack ?? String(error)}\n`);
  process.exit(1);
}
