// Apollo Client 4 (with its persisted-queries link) and graphql-ws 6 against a running gateway, as an
// app team would write them (the README's snippet is this file's client setup).
// Run by tests/e2e/test_real_clients.py:  node apollo.mjs HTTP_URL TOKEN CUSTOMER_ID
// Prints one JSON line per step; the test reads them (and makes the change the subscription waits for).
import { createHash } from "node:crypto";
import { createInterface } from "node:readline";

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, customerId] = process.argv.slice(2);
const sent = []; // what each HTTP request carried: the full query, or only its hash

// --- the README's setup ----------------------------------------------------------------------------
const headers = { Authorization: `Bearer ${token}` };
const http = createPersistedQueryLink({
  sha256: (text) => createHash("sha256").update(text).digest("hex"),
}).concat(
  new HttpLink({
    uri: url,
    headers,
    fetch: (input, init) => {
      sent.push("query" in JSON.parse(init.body) ? "query" : "hash");
      return fetch(input, init);
    },
  }),
);
const ws = new GraphQLWsLink(
  createClient({
    url: url.replace(/^http/, "ws"),
    connectionParams: headers, // sent as connection_init's payload
    webSocketImpl: WebSocket, // Node 20 has no global WebSocket
  }),
);
const client = new ApolloClient({
  link: ApolloLink.split(
    ({ operationType }) => operationType === "subscription",
    ws,
    http,
  ),
  cache: new InMemoryCache(),
  // A denied field is null with a FORBIDDEN error: 'all' keeps the rest of the answer.
  defaultOptions: { query: { errorPolicy: "all", fetchPolicy: "no-cache" } },
});
// ---------------------------------------------------------------------------------------------------

const CUSTOMER_360 = gql`
  query Customer360($id: ID!) {
    customer(id: $id) {
      accountNo name email phone address taxId inPool
      orders(first: 5) { orderNo }
      tickets(first: 5) { id subject }
      satisfaction { rated average }
      contracts { contractId }
      lastContactAt dormant
    }
  }
`;

function say(step, value) {
  process.stdout.write(JSON.stringify({ step, ...value }) + "\n");
}

const first = await client.query({ query: CUSTOMER_360, variables: { id: customerId } });
say("query", {
  data: first.data,
  errors: (first.error?.errors ?? []).map((e) => ({ code: e.extensions?.code, path: e.path })),
});
const again = await client.query({ query: CUSTOMER_360, variables: { id: customerId } });
say("again", { same: JSON.stringify(again.data) === JSON.stringify(first.data), sent });

const events = client.subscribe({
  query: gql`
    subscription Changed($id: ID!) {
      customerChanged(id: $id) { kind customer { accountNo title phone } }
    }
  `,
  variables: { id: customerId },
});
const subscription = events.subscribe({
  next: (result) => {
    say("event", { data: result.data, error: result.error?.message ?? null });
    subscription.unsubscribe();
    client.stop();
    process.exit(0);
  },
  error: (error) => {
    say("error", { message: String(error) });
    process.exit(1);
  },
});
say("subscribed", {});
createInterface({ input: process.stdin }); // keeps running until the event (the test kills it after a timeout)
