#!/usr/bin/env node
// The official livekit-client (npm, pinned) in Debian's Chromium, driven by playwright-core, as a
// test peer. Same interface and output as py_peer.py: JSON lines ({"event":...}) then
// {"summary":{...}}; exit 0 when the expectations were met before --stay ran out.
//
// usage: node browser_peer.mjs --url URL [--token T | --identity ID --room R] [--publish audio,video|none]
//          [--spc 0|1] [--stay S] [--expect-video N] [--expect-audio N] [--expect-from ID]...
//          [--expect-connect-error TEXT] [--expect-disconnect REASON] [--hold] [--codec vp8|h264]
//          [--width W --height H --fps F] [--progress-ms N] [--fake-mic] [--verbose]
// The page is served from 127.0.0.1 on a free port (a secure context, so getUserMedia works);
// Chromium's fake camera (moving pattern) and a WebAudio 440 Hz tone (or, with --fake-mic, Chromium's
// fake microphone, which beeps 20 ms every 500 ms) are the media.
import { chromium } from 'playwright-core';
import { AccessToken } from 'livekit-server-sdk';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/lib/chromium/chromium';
const T0 = Date.now();

function parseArgs(argv) {
  const o = {
    url: process.env.LIVEKIT_URL ?? 'ws://127.0.0.1:7880', token: '', identity: 'browser-peer', room: 'test-room',
    key: 'devkey', secret: 'secret', publish: 'audio,video', spc: null, stay: 30, expectVideo: 0, expectAudio: 0,
    expectFrom: [], expectConnectError: null, expectDisconnect: '', hold: false, codec: '', width: 320, height: 240,
    fps: 15, progressMs: 0, fakeMic: false, verbose: false,
  };
  const num = new Set(['progressMs', 'stay', 'expectVideo', 'expectAudio', 'width', 'height', 'fps']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    let [k, v] = a.slice(2).split(/=(.*)/s);
    k = k.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(k in o)) throw new Error(`unknown option --${a.slice(2)}`);
    if (typeof o[k] === 'boolean') { o[k] = true; continue; }
    if (v === undefined) v = argv[++i];
    if (v === undefined) throw new Error(`option ${a} needs a value`);
    if (Array.isArray(o[k])) o[k].push(v);
    else o[k] = num.has(k) ? Number(v) : v;
  }
  if (o.spc !== null && o.spc !== '0' && o.spc !== '1') throw new Error('--spc takes 0 or 1');
  return o;
}

const emit = (obj) => {
  if (obj.t_ms === undefined) obj.t_ms = Date.now() - T0;
  process.stdout.write(JSON.stringify(obj) + '\n');
};

async function mint(o) {
  const at = new AccessToken(o.key, o.secret, { identity: o.identity, name: o.identity, ttl: '1h' });
  at.addGrant({ roomJoin: true, room: o.room, canPublish: true, canSubscribe: true, canPublishData: true });
  return at.toJwt();
}

function serve() {
  const files = {
    '/page.html': [path.join(HERE, 'page.html'), 'text/html'],
    '/livekit-client.umd.js': [path.join(HERE, 'node_modules/livekit-client/dist/livekit-client.umd.js'), 'text/javascript'],
  };
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) { res.writeHead(404); res.end('not found'); return; }
    res.writeHead(200, { 'content-type': f[1] });
    fs.createReadStream(f[0]).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  let o;
  try { o = parseArgs(process.argv.slice(2)); } catch (e) {
    console.error(`browser_peer: ${e.message}`); process.exit(2);
  }
  let summary = null;
  let ctx = null;
  let server = null;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'roomcast-chromium-'));
  const cleanup = async () => {
    try { if (ctx) await ctx.close(); } catch { /* already gone */ }
    if (server) server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  // Hard wall clock, whatever the page or the browser does (the JS SDK can retry forever).
  const wall = setTimeout(async () => {
    emit({ event: 'wall_timeout' });
    emit({ summary: { ok: false, connected: false, identity: o.identity, error: 'wall timeout', received: {} } });
    await cleanup();
    process.exit(1);
  }, (o.stay + 20) * 1000);
  wall.unref();

  try {
    const token = o.token || (await mint(o));
    server = await serve();
    const pageUrl = `http://127.0.0.1:${server.address().port}/page.html`;
    const t = Date.now();
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true,
      // Our own SIGTERM/SIGINT handlers let the page leave the room and report first.
      handleSIGTERM: false, handleSIGINT: false, handleSIGHUP: false,
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run', '--disable-dev-shm-usage', '--disable-quic',
        '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
        '--autoplay-policy=no-user-gesture-required',
      ],
    });
    emit({ event: 'browser_started', ms: Date.now() - t });
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('console', (m) => { if (o.verbose) process.stderr.write(`console: ${m.text()}\n`); });
    page.on('pageerror', (e) => emit({ event: 'page_error', error: String(e) }));
    await page.exposeFunction('__emit', (obj) => emit(obj));
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.__pageReady === true, null, { timeout: 10000 });
    const onSignal = () => { page.evaluate(() => window.__stopPeer()).catch(() => {}); };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    const stayMs = Math.max(0, o.stay * 1000 - (Date.now() - T0));
    const stayTimer = setTimeout(() => { emit({ event: 'stay_elapsed' }); onSignal(); }, stayMs);
    summary = await page.evaluate((cfg) => window.runPeer(cfg), {
      url: o.url, token, identity: o.identity, publish: o.publish === 'none' ? '' : o.publish, spc: o.spc,
      expectVideo: o.expectVideo, expectAudio: o.expectAudio, expectFrom: o.expectFrom,
      expectConnectError: o.expectConnectError, expectDisconnect: o.expectDisconnect, hold: o.hold,
      codec: o.codec, progressMs: o.progressMs, fakeMic: o.fakeMic, width: o.width, height: o.height, fps: o.fps,
    });
    clearTimeout(stayTimer);
  } catch (e) {
    summary = { ok: false, connected: false, identity: o.identity, error: `driver: ${e.message ?? e}`, received: {} };
  }
  emit({ summary });
  await cleanup();
  process.exit(summary && summary.ok ? 0 : 1);
}

main();
