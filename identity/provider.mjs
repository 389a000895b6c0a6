// A DEVELOPMENT OpenID Connect provider for the tests and `make ui`, never for production.
//
// It is the OpenID Certified `oidc-provider` with a minimal login form checked against the
// accounts of its configuration, consent granted without a page (every client is first-party
// here) and JWT access tokens for the configured resource servers. Production uses any standard
// provider (Keycloak, a national federation): nothing in the platform depends on this file.
//
// Usage: node identity/provider.mjs CONFIG.json (rendered by auth/dev_provider.py), a JSON object:
//   development      must be true, or the provider refuses to start
//   issuer, host, port
//   clients          oidc-provider client metadata (public clients: token_endpoint_auth_method
//                    "none", PKCE required); backchannel_logout_uri optional
//   accounts         [{sub, name, email, password, groups}]: the login form checks these
//   resources        resource indicators (RFC 8707) whose access tokens are JWTs, aud = resource
//   resource_scope   the scope those resources define (default "dicomweb"), optional
//   cookie_keys, jwks the keys, generated once per home so they survive a restart
//   clock_tolerance  seconds of clock skew accepted (default 60), optional
// It prints "ready <issuer>" once listening and exits on SIGTERM.

import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const BANNER = 'DEVELOPMENT identity provider: demo accounts only, not for real users or real data';
const MAX_FORM_BYTES = 16 * 1024;

function fail(message) {
  console.error(`identity: ${message}`);
  process.exit(2);
}

function loadConfig(path) {
  if (!path) fail('usage: node identity/provider.mjs CONFIG.json');
  let config;
  try {
    config = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    fail(`cannot read ${path}: ${err.message}`);
  }
  // A guard against starting this with a production configuration by mistake.
  if (config.development !== true) fail('refusing to start: the configuration lacks "development": true');
  for (const key of ['issuer', 'port', 'clients', 'accounts', 'cookie_keys', 'jwks']) {
    if (config[key] === undefined) fail(`the configuration lacks "${key}"`);
  }
  return config;
}

const config = loadConfig(process.argv[2]);
const accounts = new Map(config.accounts.map((account) => [account.sub, account]));
const resources = new Set(config.resources ?? []);
const resourceScope = config.resource_scope ?? 'dicomweb';
// The only outgoing calls this provider makes are back-channel logouts, to relying parties that
// run on loopback in development. oidc-provider refuses loopback by default (SSRF guard): lift
// it for exactly the registered back-channel URIs, nothing else.
const backchannelUris = new Set(
  config.clients.map((client) => client.backchannel_logout_uri).filter(Boolean).map((uri) => new URL(uri).href),
);

function htmlSafe(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${htmlSafe(title)} (development)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}
.banner{background:#b00020;color:#fff;padding:.6rem .8rem;font-weight:600}
.error{color:#b00020;font-weight:600}label{display:block;margin:.6rem 0}
input{width:100%;padding:.4rem;box-sizing:border-box}button{margin-top:.8rem;padding:.5rem 1rem}
</style></head>
<body><p class="banner" role="alert">${htmlSafe(BANNER)}</p>
<h1>${htmlSafe(title)}</h1>
${body}
</body></html>`;
}

function passwordMatches(given, expected) {
  const a = Buffer.from(String(given ?? ''), 'utf8');
  const b = Buffer.from(String(expected ?? ''), 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

async function readForm(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new errors.InvalidRequest('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function loginPage(ctx, uid, client, { login = '', error } = {}) {
  const who = client?.clientName || client?.clientId || 'an application';
  ctx.type = 'html';
  ctx.body = page('Sign in', `
<p>Sign in to continue to <strong>${htmlSafe(who)}</strong>.</p>
${error ? `<p class="error" role="alert">${htmlSafe(error)}</p>` : ''}
<form method="post" action="/interaction/${htmlSafe(uid)}/login" autocomplete="off">
<label>Username <input name="login" value="${htmlSafe(login)}" autofocus required></label>
<label>Password <input name="password" type="password" required></label>
<button type="submit">Sign in</button>
</form>`);
}

async function grantConsent(provider, details) {
  // First-party clients only: grant exactly what the prompt says is missing, as the
  // documented consent interaction does once a user clicked "allow".
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const saved = await grant.save();
  return grantId ? {} : { grantId: saved };
}

async function interactions(provider, ctx, next) {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/.exec(ctx.path);
  if (!match) return next();
  ctx.set('cache-control', 'no-store');
  try {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const client = await provider.Client.find(details.params.client_id);
    if (ctx.method === 'GET' && !match[2]) {
      if (details.prompt.name === 'login') return loginPage(ctx, details.uid, client);
      if (details.prompt.name === 'consent') {
        const consent = await grantConsent(provider, details);
        return provider.interactionFinished(ctx.req, ctx.res, { consent }, { mergeWithLastSubmission: true });
      }
      ctx.throw(400, `unsupported prompt ${details.prompt.name}`);
    }
    if (ctx.method === 'POST' && match[2]) {
      if (details.prompt.name !== 'login') ctx.throw(400, 'this interaction is not waiting for a login');
      const form = await readForm(ctx.req);
      const login = form.get('login') ?? '';
      const account = accounts.get(login);
      if (!account || !passwordMatches(form.get('password'), account.password)) {
        ctx.status = 401;
        return loginPage(ctx, details.uid, client, { login, error: 'Unknown username or wrong password.' });
      }
      return provider.interactionFinished(
        ctx.req,
        ctx.res,
        { login: { accountId: account.sub, amr: ['pwd'] } },
        { mergeWithLastSubmission: false },
      );
    }
    ctx.throw(405);
  } catch (err) {
    if (err instanceof errors.SessionNotFound) {
      ctx.status = err.status;
      ctx.type = 'html';
      ctx.body = page('Sign-in expired', `<p class="error">${htmlSafe(err.error_description || err.message)}</p>
<p>Go back to the application and start again.</p>`);
      return undefined;
    }
    throw err;
  }
}

async function findAccount(_ctx, sub) {
  const account = accounts.get(sub);
  if (!account) return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        name: account.name,
        preferred_username: account.sub,
        email: account.email,
        email_verified: Boolean(account.email),
        groups: [...(account.groups ?? [])],
      };
    },
  };
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  responseTypes: ['code'],
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'RS256',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  jwks: config.jwks,
  cookies: { keys: config.cookie_keys },
  findAccount,
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    sid: null,
    auth_time: null,
  },
  // The platform's applications read the groups from the ID token: no extra userinfo call.
  conformIdTokenClaims: false,
  clockTolerance: config.clock_tolerance ?? 60,
  // Public clients (a browser viewer) cannot keep a secret: PKCE is their proof. Confidential
  // clients may send it too (auth/oidc.py always does).
  pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Sign out', `${form}
<p>Sign out of every application of this development provider?</p>
<button type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
    backchannelLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A client that names no resource gets an access token for userinfo only; one that
      // names several must choose at the token endpoint.
      async defaultResource(_ctx, _client, oneOf) {
        return oneOf;
      },
      async useGrantedResource() {
        return false;
      },
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (!resources.has(resourceIndicator)) throw new errors.InvalidTarget();
        return {
          scope: resourceScope,
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 60 * 60,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  fetch(url, options) {
    if (backchannelUris.has(new URL(url).href)) {
      const { dispatcher: _ssrfGuard, ...rest } = options;
      return globalThis.fetch(url, rest);
    }
    return globalThis.fetch(url, options);
  },
  async extraTokenClaims(_ctx, token) {
    // Resource servers authorise on groups without calling back the provider.
    const account = accounts.get(token.accountId);
    return account ? { groups: [...(account.groups ?? [])] } : undefined;
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page(
      'Sign-in error',
      Object.entries(out)
        .map(([key, value]) => `<p><strong>${htmlSafe(key)}</strong>: ${htmlSafe(value)}</p>`)
        .join('\n'),
    );
  },
  ttl: {
    AccessToken: 60 * 60,
    AuthorizationCode: 60,
    IdToken: 60 * 60,
    Interaction: 10 * 60,
    Session: 8 * 60 * 60,
    Grant: 8 * 60 * 60,
  },
});

provider.use((ctx, next) => interactions(provider, ctx, next));
provider.on('backchannel.error', (_ctx, err, client) => {
  console.error(`identity: back-channel logout to ${client.clientId} failed: ${err.message}`);
});
provider.on('server_error', (_ctx, err) => console.error('identity: server error', err));

const server = provider.listen(config.port, config.host ?? '127.0.0.1', () => {
  console.log(`ready ${config.issuer}`);
});
server.on('error', (err) => fail(err.message));

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
