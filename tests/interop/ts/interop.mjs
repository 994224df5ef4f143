// Driver for the TypeScript side of tests/interop/test_typescript_interop.py.
//
// The test copies this file next to a node_modules folder holding the pinned
// `openworkflow` npm package (and its `postgres` peer), then runs
//
//   node interop.mjs <command> [args...]
//
// with OW_URL, OW_SCHEMA and OW_NAMESPACE in the environment. Every line
// written to stdout is one JSON object ({"event": ...}); errors go to stderr
// and end the process with a non-zero exit code.
//
// Commands:
//   migrate                 connect once (runs the package's migrations), stop
//   run <workflow> <input>  start a run (input is JSON), print it, then wait
//                           for it with the client's handle.result()
//   create <workflow> <input> <idempotencyKey>
//                           start a run with an idempotency key, print it
//   work <runId>            run a Worker with the workflows below until that
//                           run is terminal, then stop it and print the run
//   get <runId>             print the run (getWorkflowRun) and its steps

import { OpenWorkflow, Worker, defineWorkflow } from "openworkflow";
import { BackendPostgres } from "openworkflow/postgres";

const TERMINAL = new Set(["completed", "succeeded", "failed", "canceled"]);

// The same workflow as `interop_greet` in test_typescript_interop.py.
export const interopGreet = defineWorkflow(
  { name: "interop-greet" },
  async ({ input, step }) => {
    const greeting = await step.run(
      { name: "greet" },
      () => `Hello, ${input.name}!`,
    );
    const keys = await step.run({ name: "mixed-keys" }, () => ({
      UPPER_KEY: 1,
      camelKey: 2,
      snake_key: 3,
      nested: { innerKey: [1, { DeepKey: true }], "kebab-key": "x" },
    }));
    // The second "greet" resolves to the durable name "greet:1".
    const shout = await step.run({ name: "greet" }, () =>
      greeting.toUpperCase(),
    );
    await step.sleep("nap", "1s");
    const nothing = await step.run({ name: "nothing" }, () => undefined);
    return { greeting, shout, keys, nothing, echo: input };
  },
);

// The same workflow as `interop_fail` in test_typescript_interop.py: a step
// that throws, with no retries, fails the run.
export const interopFail = defineWorkflow(
  { name: "interop-fail" },
  async ({ input, step }) => {
    await step.run({ name: "prepare" }, () => ({ ready: true }));
    await step.run(
      { name: "explode", retryPolicy: { maximumAttempts: 1 } },
      () => {
        throw new TypeError(`boom for ${input.name}`);
      },
    );
    return "unreachable";
  },
);

const WORKFLOWS = {
  [interopGreet.spec.name]: interopGreet,
  [interopFail.spec.name]: interopFail,
};

function workflowNamed(name) {
  const found = WORKFLOWS[name];
  if (!found) throw new Error(`unknown workflow ${JSON.stringify(name)}`);
  return found;
}

function emit(event, fields) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
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

async function listSteps(backend, runId) {
  const steps = [];
  let after;
  for (;;) {
    const page = await backend.listStepAttempts({
      workflowRunId: runId,
      limit: 100,
      after,
    });
    steps.push(...page.data);
    if (!page.pagination.next) return steps;
    after = page.pagination.next;
  }
}

const commands = {
  async migrate() {
    const backend = await connect();
    await backend.stop();
    emit("migrated", {});
  },

  async run(workflowName, inputJson) {
    const backend = await connect();
    try {
      const ow = new OpenWorkflow({ backend });
      const handle = await ow.runWorkflow(
        workflowNamed(workflowName).spec,
        JSON.parse(inputJson),
      );
      emit("created", { run: handle.workflowRun });
      const timeoutMs = Number(process.env.OW_TIMEOUT_MS ?? 60000);
      let output;
      try {
        output = await handle.result({ timeoutMs });
      } catch (error) {
        if (!String(error?.message).includes(" failed: ")) throw error;
        emit("failed", { message: error.message });
        return;
      }
      emit("result", { output });
    } finally {
      await backend.stop();
    }
  },

  async create(workflowName, inputJson, idempotencyKey) {
    const backend = await connect();
    try {
      const ow = new OpenWorkflow({ backend });
      const handle = await ow.runWorkflow(
        workflowNamed(workflowName).spec,
        JSON.parse(inputJson),
        { idempotencyKey },
      );
      emit("created", { run: handle.workflowRun });
    } finally {
      await backend.stop();
    }
  },

  async work(runId) {
    const backend = await connect();
    try {
      const worker = new Worker({
        backend,
        workflows: Object.values(WORKFLOWS),
      });
      await worker.start();
      emit("started", {});
      let run;
      try {
        const timeoutMs = Number(process.env.OW_TIMEOUT_MS ?? 60000);
        run = await waitTerminal(backend, runId, timeoutMs);
      } finally {
        await worker.stop();
      }
      emit("finished", { run });
    } finally {
      await backend.stop();
    }
  },

  async get(runId) {
    const backend = await connect();
    try {
      const run = await backend.getWorkflowRun({ workflowRunId: runId });
      const steps = await listSteps(backend, runId);
      emit("got", { run, steps });
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
