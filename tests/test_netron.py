"""--netron=True serves the exported model in Netron on localhost."""
import urllib.request

import netron

import finn_mobilenetv2 as demo


def test_netron_serves_the_exported_file(w8a8, monkeypatch):
    real_start, addresses, pages = netron.start, [], []

    def start(file, browse=True):  # no browser on a test machine
        addresses.append(real_start(file, browse=False))
        return addresses[-1]

    def wait():  # instead of blocking until Ctrl-C, fetch the page the server serves
        host, port = addresses[-1]
        pages.append(urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).status)

    monkeypatch.setattr(netron, "start", start)
    monkeypatch.setattr(netron, "wait", wait)
    try:
        demo.serve_in_netron(w8a8.output)
    finally:
        netron.stop()
    assert len(addresses) == 1
    assert pages == [200]
