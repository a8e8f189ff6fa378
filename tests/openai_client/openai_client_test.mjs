// The worker's HTTP API through the official `openai` npm client (pinned by package-lock.json):
// completions and chat, streaming and not, n and batches of prompts, stop strings, usage, logprobs, echo and vLLM's
// prompt_logprobs, the eviction policy as extra body fields, OpenAI-shaped errors, and a client that
// goes away mid-stream cancelling its job.
// Usage: node openai_client_test.mjs <node_modules> <http base url> <metrics url> <model id>
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const [nodeModules, baseURL, metricsURL, model] = process.argv.slice(2);
const require = createRequire(path.join(nodeModules, 'noop.js'));
const OpenAI = require('openai');
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });

async function metric(name, labels) {
  const text = await (await fetch(metricsURL)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (labels && !labels.every((l) => line.includes(l))) continue;
    sum += Number(line.split(' ').pop());
  }
  return sum;
}

async function collect(stream) {
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.text ?? choice.delta?.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { text, finish, usage, chunks };
}

const tests = {
  async modelsListTheServedModel() {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [model]);
  },

  async completionStreamedEqualsCompletionWhole() {
    const request = { model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 };
    const whole = await client.completions.create(request);
    assert.equal(whole.object, 'text_completion');
    assert.equal(whole.choices.length, 1);
    assert.ok(whole.choices[0].text.length > 0);
    assert.equal(whole.usage.completion_tokens, 24);
    assert.equal(whole.choices[0].finish_reason, 'length');
    assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + 24);
    const streamed = await collect(await client.completions.create({
      ...request, stream: true, stream_options: { include_usage: true } }));
    assert.equal(streamed.text, whole.choices[0].text);
    assert.equal(streamed.finish, 'length');
    assert.deepEqual(streamed.usage, whole.usage);
    assert.ok(streamed.chunks > 3, `only ${streamed.chunks} chunks: not streamed`);
  },

  async stopStringIsCutAsOpenAiDoes() {
    const request = { model, prompt: 'Once upon a time', max_tokens: 40, temperature: 0 };
    const full = (await client.completions.create(request)).choices[0].text;
    const at = full.indexOf('.');
    assert.ok(at > 0, `no '.' in ${JSON.stringify(full)}`);
    const stopped = await client.completions.create({ ...request, stop: ['.'] });
    assert.equal(stopped.choices[0].text, full.slice(0, at));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    const streamed = await collect(await client.completions.create({ ...request, stop: '.', stream: true }));
    assert.equal(streamed.text, full.slice(0, at));
    assert.equal(streamed.finish, 'stop');
  },

  async logprobsAreReportedPerTokenWithAlternatives() {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, logprobs: 3 });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, 8);
    assert.equal(lp.tokens.join(''), r.choices[0].text);
    for (let i = 0; i < 8; i++) {
      assert.ok(lp.token_logprobs[i] <= 0);
      const alternatives = Object.entries(lp.top_logprobs[i]);
      assert.equal(alternatives.length, 3);
      // Greedy: the chosen token is the most likely one.
      assert.equal(Math.max(...alternatives.map(([, v]) => v)), lp.token_logprobs[i]);
    }
    const chat = await client.chat.completions.create({
      model, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2,
      messages: [{ role: 'user', content: 'Hi' }], stream: true });
    let entries = 0;
    for await (const chunk of chat) {
      for (const c of chunk.choices[0]?.logprobs?.content ?? []) {
        entries++;
        assert.equal(c.top_logprobs.length, 2);
        assert.deepEqual(c.bytes, [...Buffer.from(c.token, 'utf8')]);
      }
    }
    assert.equal(entries, 5);
  },

  async promptLogprobsAndEchoAsVllmAndOpenAiReportThem() {
    // prompt_logprobs is vLLM's extra body field; the client passes unknown fields through.
    const r = await client.completions.create({
      model, prompt: 'Once upon a time', max_tokens: 2, temperature: 0, logprobs: 2, echo: true, prompt_logprobs: 2 });
    const choice = r.choices[0];
    const prompt = choice.prompt_logprobs;
    assert.equal(prompt.length, r.usage.prompt_tokens);
    assert.equal(prompt[0], null);
    const lp = choice.logprobs;
    assert.ok(choice.text.startsWith('Once upon a time'), choice.text);
    assert.equal(lp.tokens.length, r.usage.prompt_tokens + 2);
    assert.equal(lp.token_logprobs[0], null);
    for (let i = 1; i < prompt.length; i++) {
      const entries = Object.entries(prompt[i]);
      assert.ok(entries.length >= 2 && entries.length <= 3, JSON.stringify(prompt[i]));
      assert.deepEqual(entries.filter(([, e]) => e.rank <= 2).map(([, e]) => e.rank).sort(), [1, 2]);
      // The echoed prompt token is the one prompt_logprobs reports with its rank, at the same logprob.
      const own = entries.find(([, e]) => e.decoded_token === lp.tokens[i] && Math.abs(e.logprob - lp.token_logprobs[i]) < 1e-6);
      assert.ok(own, `position ${i}: ${lp.tokens[i]} ${lp.token_logprobs[i]} not in ${JSON.stringify(prompt[i])}`);
    }
    await assert.rejects(client.completions.create({ model, prompt: 'x', prompt_logprobs: 1, stream: true }),
                         (e) => e.status === 400 && e.param === 'prompt_logprobs');
  },

  async aSeedRepeatsASampledCompletion() {
    const request = { model, prompt: 'Once upon a time', max_tokens: 30, temperature: 1, seed: 1234 };
    const a = await client.completions.create(request);
    const b = await client.completions.create(request);
    assert.equal(a.choices[0].text, b.choices[0].text);
  },

  async nChoicesOfABatchOfPromptsEachAnswerAsAlone() {
    const request = { model, max_tokens: 10, temperature: 1, seed: 77 };
    const prompts = ['Once upon a time', 'The dog'];
    const batch = await client.completions.create({ ...request, prompt: prompts, n: 2 });
    assert.deepEqual(batch.choices.map((c) => c.index), [0, 1, 2, 3]);
    let completion = 0;
    for (let i = 0; i < 4; i++) {
      const alone = await client.completions.create({ ...request, prompt: prompts[i >> 1], seed: 77 + (i & 1) });
      assert.equal(batch.choices[i].text, alone.choices[0].text, `choice ${i}`);
      completion += alone.usage.completion_tokens;
    }
    assert.equal(batch.usage.completion_tokens, completion);
    const chat = await client.chat.completions.create({
      model, max_tokens: 8, temperature: 0, n: 3, messages: [{ role: 'user', content: 'A cat' }] });
    assert.equal(chat.choices.length, 3);
    assert.equal(new Set(chat.choices.map((c) => c.message.content)).size, 1);  // greedy: one answer thrice
  },

  async chatStreamedEqualsChatWhole() {
    const request = {
      model, max_tokens: 16, temperature: 0,
      messages: [{ role: 'system', content: 'Tell stories.' }, { role: 'user', content: 'A cat' },
                 { role: 'assistant', content: 'The cat sat.' }, { role: 'user', content: 'More' }],
    };
    const whole = await client.chat.completions.create(request);
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.choices[0].message.role, 'assistant');
    assert.ok(whole.usage.prompt_tokens > 20, 'the template and all turns are in the prompt');
    const streamed = await collect(await client.chat.completions.create({ ...request, stream: true }));
    assert.equal(streamed.text, whole.choices[0].message.content);
    assert.equal(streamed.finish, whole.choices[0].finish_reason);
  },

  async evictionPolicyTravelsAsExtraBodyFields() {
    const before = await metric('a2sf_worker_evicted_entries_total');
    const r = await client.completions.create({
      model, prompt: 'Once upon a time', max_tokens: 40, temperature: 0,
      kv_policy: { name: 'a2sf', alpha: 0.5 }, kv_budget: { tokens: 8 } });
    assert.equal(r.usage.completion_tokens, 40);
    assert.ok(await metric('a2sf_worker_evicted_entries_total') > before, 'a budget of 8 tokens must evict');
  },

  async badRequestsAreOpenAiErrors() {
    // More choices than the worker holds at once (--max_batch 16 + --max_waiting 64).
    await assert.rejects(client.completions.create({ model, prompt: 'x', n: 81 }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.param, 'n');
      assert.match(e.message, /more than this worker holds at once \(80\)/);
      return true;
    });
    await assert.rejects(client.completions.create({ model: 'gpt-4', prompt: 'x' }), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError);
      assert.equal(e.code, 'model_not_found');
      return true;
    });
    await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'assistant', content: 'x' }] }),
                         (e) => e.status === 400 && e.param === 'messages[0]');
    await assert.rejects(client.completions.create({ model, prompt: 'x', kv_policy: { name: 'nope' } }),
                         (e) => e.status === 400 && /unknown policy/.test(e.message));
    await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: 100000 }),
                         (e) => e.status === 400 && /context/.test(e.message));
  },

  async clientLeavingMidStreamCancelsTheJob() {
    const before = await metric('a2sf_worker_jobs_total', ['outcome="cancelled"']);
    const stream = await client.completions.create({
      model, prompt: 'Once', max_tokens: 500, temperature: 1, seed: 1, ignore_eos: true, stream: true });
    for await (const chunk of stream) { void chunk; break; }  // break aborts the request
    for (let i = 0; i < 100 && await metric('a2sf_worker_jobs_total', ['outcome="cancelled"']) === before; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await metric('a2sf_worker_jobs_total', ['outcome="cancelled"']), before + 1);
  },
};

let failed = 0;
for (const [name, test] of Object.entries(tests)) {
  try {
    await test();
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack ?? e}`);
  }
}
console.log(`${Object.keys(tests).length - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
