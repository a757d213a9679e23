// A plain WebSocket reverse proxy with node-http-proxy: the "node http-proxy" column.
//
//   npm install --prefix bench/nodeproxy          (once)
//   node bench/nodeproxy/proxy.js 127.0.0.1:9700 127.0.0.1:9300
//
// One node process; each upgrade is piped to the backend as bytes (http-proxy's ws mode):
// no parsing, no auth, no limits, no counting.
"use strict";
const http = require("http");
const httpProxy = require("http-proxy");

const [listen, backend] = process.argv.slice(2);
if (!listen || !backend) {
  console.error("usage: node proxy.js LISTEN_HOST:PORT BACKEND_HOST:PORT");
  process.exit(2);
}
const [host, port] = [listen.slice(0, listen.lastIndexOf(":")), Number(listen.slice(listen.lastIndexOf(":") + 1))];

const proxy = httpProxy.createProxyServer({ target: `http://${backend}`, ws: true });
proxy.on("error", (err, req, socketOrResponse) => {
  // A backend that went away: drop the client's connection rather than crash the proxy.
  if (socketOrResponse && typeof socketOrResponse.destroy === "function") socketOrResponse.destroy();
});

const server = http.createServer((req, res) => proxy.web(req, res));
server.on("upgrade", (req, socket, head) => proxy.ws(req, socket, head));
server.listen({ host, port, backlog: 1024 }, () => {
  console.log(`node http-proxy on ws://${host}:${port} -> ${backend}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
