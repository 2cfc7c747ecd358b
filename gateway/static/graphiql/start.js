// GraphiQL for customer-graph, served by the gateway itself: no request leaves for another host.
// The Headers tab's values go with every HTTP request and, as the connection_init payload, with
// subscriptions over WS /graphql (graphql-transport-ws).
(function () {
  "use strict";
  const EXAMPLE_QUERY = `# customer-graph: paste a line the demo printed into Headers, e.g.
#   {"Authorization": "Bearer eyJ..."}
# then run (Ctrl-Enter). Subscriptions work here too (see the README, "Live updates").
{
  viewer { id name roles region }
  customers(first: 5) {
    totalCount
    edges { node { id accountNo name email phone } }
  }
}
`;
  const parameters = new URLSearchParams(window.location.search);
  const fetchURL = window.location.href.split("?")[0].split("#")[0];
  const socketURL = new URL(fetchURL);
  socketURL.protocol = socketURL.protocol === "https:" ? "wss:" : "ws:";

  const fetcher = GraphiQL.createFetcher({ url: fetchURL, subscriptionUrl: socketURL.toString() });

  function remember(name, value) {
    if (value) parameters.set(name, value);
    else parameters.delete(name);
    const search = parameters.toString();
    history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  function Page() {
    const [query, setQuery] = React.useState(parameters.get("q") || EXAMPLE_QUERY);
    const [variables, setVariables] = React.useState(parameters.get("variables") || undefined);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      query: query,
      variables: variables,
      onEditQuery: function (text) { setQuery(text); remember("q", text); },
      onEditVariables: function (text) { setVariables(text); remember("variables", text); },
      inputValueDeprecation: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(Page));
})();
