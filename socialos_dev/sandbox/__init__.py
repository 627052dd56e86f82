"""Sandboxes: local stand-ins for the upstream services, for development and tests.

Not product code: the app starts them only in embedded mode, and
``python -m socialos_dev.sandbox`` runs them on their own:

* ``socialos``: the Social OS API (``/api``) and its admin API (``/admin``);
* ``pusher``: Pusher's HTTP API, checking signatures as Pusher does, and on
  the same port ``channels_ws``: Pusher's Channels websocket protocol (v7);
* ``webhooks``: the signed webhooks the Pusher sandbox sends the app;
* ``base``: what both share (threaded keep-alive server, fault injection).
"""

__all__ = ["serve"]


def serve(host, api_port, pusher_port, channel, app_id, key, secret, webhook_url=None):
    """Run both sandboxes until SIGINT or SIGTERM, then stop them cleanly.

    Prints one line per sandbox with its URL (never a secret). Must be
    called from the main thread (it installs the signal handlers).
    ``webhook_url``: where the Pusher sandbox posts signed webhooks (None: nowhere).
    """
    # Imported here so importing the package (e.g. for ``base``) stays light.
    import signal
    import threading

    from socialos_dev.sandbox import pusher, socialos

    servers = [socialos.make_server(host, api_port)]
    try:
        servers.append(pusher.make_server(host, pusher_port, app_id, key, secret,
                                          channel=channel, demo_members=True, webhook_url=webhook_url))
    except BaseException:
        servers[0].server_close()
        raise
    threads = [threading.Thread(target=s.serve_forever, name=f"sandbox-{i}", daemon=True)
               for i, s in enumerate(servers)]

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for thread in threads:
            thread.start()
        api = f"http://{_url_host(host)}:{servers[0].server_address[1]}"
        print(f"Social OS API sandbox: {api}/api (admin API: {api}/admin)", flush=True)
        where = f"{_url_host(host)}:{servers[1].server_address[1]}"
        print(f"Pusher sandbox: http://{where} (app {app_id}, channel {channel};"
              f" websocket ws://{where}/app/{key})", flush=True)
        if webhook_url:
            print(f"Pusher sandbox webhooks: {webhook_url}", flush=True)
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        for server, thread in zip(servers, threads):
            if thread.is_alive():  # shutdown() waits for serve_forever, so only a running one
                server.shutdown()
            server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _url_host(host):
    """A host as it goes in a URL: IPv6 literals in brackets, the wildcard shown as loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
