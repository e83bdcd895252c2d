// The MCP TypeScript SDK as a real client of the gateway, driven headlessly.
//
// Usage: node mcp_client.mjs <mcp-url> [--api-key KEY] [--content TEXT] [--store]
//                             [--client-metadata-url URL]
// Trust the gateway's CA with NODE_EXTRA_CA_CERTS. Prints one JSON summary line last.
//
// The SDK does discovery from the 401, registration, PKCE, the token request and, on a
// 403 insufficient_scope, re-authorisation; only the browser is replaced: the
// provider's redirectToAuthorization follows the authorize URL itself (approving the
// consent form with the API key when one is shown) and keeps the code for finishAuth.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const REDIRECT_URL = "http://127.0.0.1:33420/callback";

function consentForm(page, pageUrl) {
  const action = /<form[^>]*action="([^"]*)"/i.exec(page);
  if (!action) throw new Error("consent page without a form");
  const fields = new URLSearchParams();
  for (const input of page.matchAll(/<input[^>]*>/gi)) {
    const tag = input[0];
    const name = /name="([^"]*)"/.exec(tag);
    const value = /value="([^"]*)"/.exec(tag);
    if (/type="hidden"/.test(tag) && name) fields.set(name[1], value ? value[1] : "");
  }
  return { url: new URL(action[1], pageUrl), fields };
}

class HeadlessProvider {
  constructor({ apiKey, clientMetadataUrl }) {
    this.apiKey = apiKey;
    // SEP-991: used as client_id instead of registering when the server supports it.
    this.clientMetadataUrl = clientMetadataUrl;
    this.visited = [];
    this.redirects = [];
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._state = undefined;
    this._code = undefined;
  }
  get redirectUrl() {
    return REDIRECT_URL;
  }
  get clientMetadata() {
    return {
      client_name: "memory-gateway e2e (MCP TypeScript SDK)",
      redirect_uris: [REDIRECT_URL],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    this._state = randomBytes(16).toString("base64url");
    return this._state;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this._verifier = verifier;
  }
  codeVerifier() {
    return this._verifier;
  }
  async redirectToAuthorization(url) {
    this.visited.push(url.href);
    let answer = await fetch(url, { redirect: "manual", headers: { accept: "text/html" } });
    if (answer.status === 200) {
      if (!this.apiKey) throw new Error("consent asked and no API key given");
      const form = consentForm(await answer.text(), url);
      form.fields.set("api_key", this.apiKey);
      form.fields.set("decision", "approve");
      answer = await fetch(form.url, { method: "POST", body: form.fields, redirect: "manual" });
    }
    const location = answer.headers.get("location");
    if (![302, 303].includes(answer.status) || !location) {
      throw new Error(`authorize answered ${answer.status}: ${(await answer.text()).slice(0, 200)}`);
    }
    const params = new URL(location).searchParams;
    this.redirects.push(Object.fromEntries(params));
    if (params.get("error")) throw new Error(`authorization refused: ${location}`);
    if (params.get("state") !== this._state) throw new Error("state mismatch");
    this._code = params.get("code");
  }
  takeCode() {
    const code = this._code;
    this._code = undefined;
    if (!code) throw new Error("no authorization code captured");
    return code;
  }
}

// Runs `action`; when the SDK stops for a user authorisation (UnauthorizedError after
// redirectToAuthorization), finishes it with the captured code and runs `action` again.
async function authorised(transport, provider, action) {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    await transport.finishAuth(provider.takeCode());
    return await action();
  }
}

function sdkVersion() {
  const file = new URL("./node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url);
  return JSON.parse(readFileSync(file, "utf8")).version;
}

function toolJson(result) {
  if (result.isError) throw new Error(`tool error: ${JSON.stringify(result.content)}`);
  if (result.structuredContent) return result.structuredContent;
  return JSON.parse(result.content.map((part) => part.text ?? "").join(""));
}

let provider;

function trace() {
  return {
    authorizeRequests: provider?.visited ?? [],
    redirects: (provider?.redirects ?? []).map((params) => ({ ...params, code: params.code ? "present" : undefined })),
    finalScope: provider?.tokens()?.scope ?? null,
  };
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      "api-key": { type: "string" },
      content: { type: "string" },
      store: { type: "boolean", default: false },
      "client-metadata-url": { type: "string" },
    },
  });
  const url = new URL(positionals[0]);
  provider = new HeadlessProvider({
    apiKey: values["api-key"],
    clientMetadataUrl: values["client-metadata-url"],
  });
  const summary = { sdk: sdkVersion() };
  let transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  let client = new Client({ name: "memory-gateway-e2e-node", version: "1.0.0" });
  try {
    await client.connect(transport);
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    await transport.finishAuth(provider.takeCode());
    transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
    client = new Client({ name: "memory-gateway-e2e-node", version: "1.0.0" });
    await client.connect(transport);
  }
  summary.protocolVersion = transport.protocolVersion ?? null;
  summary.server = client.getServerVersion()?.name ?? null;
  summary.clientId = provider.clientInformation()?.client_id ?? null;
  summary.scopeAfterConnect = provider.tokens()?.scope ?? null;
  summary.tools = (await client.listTools()).tools.map((tool) => tool.name);
  const content = values.content ?? `node sdk e2e ${randomBytes(6).toString("hex")}`;
  if (values.store) {
    const stored = await authorised(transport, provider, () =>
      client.callTool({ name: "store_memory", arguments: { content } }),
    );
    summary.stored = toolJson(stored);
  }
  const found = await authorised(transport, provider, () =>
    client.callTool({ name: "retrieve_memory", arguments: { query: content } }),
  );
  summary.retrieved = JSON.stringify(toolJson(found)).includes(content);
  await client.close();
  console.log(JSON.stringify({ ...summary, ...trace() }));
}

main().catch((error) => {
  console.error(error?.stack ?? String(error));
  console.log(JSON.stringify({ error: String(error?.message ?? error), ...trace() }));
  process.exit(1);
});
