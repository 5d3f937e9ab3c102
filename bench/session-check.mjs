// Throughput of an authenticated GET /api/me (cookie → D1 batch → HMAC verify)
// against the trivial GET /api/health, on the real `npm run dev` server.
import { startDevServer } from "./dev-server.mjs";
import { load, rate, summarize } from "./lib.mjs";

export const SESSION_COOKIE = "__Host-berth_session";

/** Signs up and logs in a fresh account; returns its session cookie header. */
async function logIn(base) {
  const credentials = JSON.stringify({ email: `bench-${Date.now()}@example.com`, password: "bench password 12345" });
  const post = (path) => fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: credentials });
  const signup = await post("/api/auth/signup");
  if (signup.status !== 202) throw new Error(`signup answered ${signup.status}: ${await signup.text()}`);
  const login = await post("/api/auth/login");
  if (login.status !== 200) throw new Error(`login answered ${login.status}: ${await login.text()}`);
  const cookie = login.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`));
  if (!cookie) throw new Error("login set no session cookie");
  const header = cookie.split(";")[0];
  const me = await fetch(`${base}/api/me`, { headers: { cookie: header } });
  if (me.status !== 200) throw new Error(`/api/me with the new session answered ${me.status}: ${await me.text()}`);
  return header;
}

/**
 * `rounds` alternating batches per route (health, me, me, health, ...), so drift in
 * the machine's speed lands on both routes alike. Uses `server` (from
 * startDevServer) when given, else starts and stops its own.
 */
export async function benchSessionCheck({ server, requests = 2000, warmup = 100, concurrency = 8, rounds = 4 } = {}) {
  const own = !server;
  server ??= await startDevServer();
  try {
    const cookie = await logIn(server.base);
    const routes = {
      health: { url: `${server.base}/api/health`, headers: {} },
      me: { url: `${server.base}/api/me`, headers: { cookie } },
    };
    for (const route of Object.values(routes)) await load(route.url, { headers: route.headers, requests: warmup, concurrency });
    const runs = { health: [], me: [] };
    const perRound = Math.ceil(requests / rounds);
    for (let i = 0; i < rounds; i++) {
      for (const name of i % 2 === 0 ? ["health", "me"] : ["me", "health"]) {
        runs[name].push(await load(routes[name].url, { headers: routes[name].headers, requests: perRound, concurrency }));
      }
    }
    const health = summarize(runs.health);
    const me = summarize(runs.me);
    return {
      concurrency,
      rounds,
      warmup,
      health,
      me,
      ratios: {
        meOverHealthThroughput: me.reqPerSec / health.reqPerSec,
        meOverHealthThroughputByRound: runs.me.map((run, i) => rate(run) / rate(runs.health[i])),
        meOverHealthP50: me.p50Ms / health.p50Ms,
      },
    };
  } finally {
    if (own) await server.stop();
  }
}
