// A real OpenID Provider (panva's oidc-provider) for tests/people: `node provider.mjs
// PORT REDIRECT_URI`. Accounts are the logins below (devInteractions: any password);
// prints `READY <issuer>` once it listens on 127.0.0.1.
import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

export const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Admin', groups: ['staff', 'memory-admins'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Builder', groups: ['staff'] },
  carol: { email: 'carol@partner.test', email_verified: true, name: 'Carol Partner', groups: ['partners'] },
  mallory: { email: 'mallory@elsewhere.test', email_verified: true, name: 'Mallory', groups: [] },
  eve: { email: 'eve@example.com', email_verified: false, name: 'Eve Unverified', groups: [] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'memory-gateway',
    client_secret: 'memory-gateway-test-secret-0123456789',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: ['tests-people-provider-cookie-key-0123456789'] },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: `person-${id}`, ...account }; } };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(Number(port), '127.0.0.1', () => console.log(`READY ${issuer}`));
