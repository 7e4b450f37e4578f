"""A small DNS server on loopback for tests: answers A, AAAA and CAA questions from a dict,
over UDP, with dnspython's message parsing and building.

    zone = {"api.example.com": {"A": ["127.0.0.1"], "CAA": ['0 issue "letsencrypt.org"']}}
    with FakeDNS(zone) as dns:
        resolver.nameservers, resolver.port = [dns.host], dns.port

A name absent from the dict is NXDOMAIN; a name present without the asked type answers
NOERROR with no records; a name whose value is ``"SERVFAIL"`` answers SERVFAIL.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import dns.message
import dns.rcode
import dns.rrset

Zone = dict[str, Any]


class FakeDNS:
    def __init__(self, records: Zone) -> None:
        self.records = {name.lower().rstrip("."): value for name, value in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()
        self.asked: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.05)  # how often the serving thread looks at _stop
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDNS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, rdtype))
        entry = self.records.get(name)
        if entry is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry == "SERVFAIL":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif entry.get(rdtype):
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, "IN", rdtype, entry[rdtype])
            )
        return response

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            try:
                self.sock.sendto(self._answer(query).to_wire(), peer)
            except OSError:
                return
