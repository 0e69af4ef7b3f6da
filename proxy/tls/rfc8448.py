"""The published example handshake of RFC 8448 §3 ("Simple 1-RTT Handshake"), as values.

Theory of operation
-------------------
A key log holds only the *traffic secrets*: the bottom rungs of the TLS 1.3 key
schedule (RFC 8446 §7.1).  The rungs above them (early secret, handshake secret,
master secret) come from the (EC)DHE shared secret, which no key log records and
no TLS library hands out.  RFC 8448 publishes every value of one real handshake
(TLS_AES_128_GCM_SHA256, X25519), private keys included, so the whole ladder can be
walked and checked byte for byte::

    client X25519 private key + server X25519 public key  ->  shared secret
    shared secret + transcript hashes  ->  proxy.tls.keyschedule.key_schedule(...)
    every secret it derives  ==  EXPECTED (the RFC's values)

Only the inputs of the schedule and its published outputs are here; the module is
data: the RFC's hex, spaces removed, as bytes.  ``tests/unit/test_rfc8448.py`` checks that the inputs produce the
outputs with our key schedule.
"""

from __future__ import annotations

SUITE = "TLS_AES_128_GCM_SHA256"

# Inputs: the two key shares, and the transcript hashes the schedule binds to (§7.1).
CLIENT_X25519_PRIVATE = bytes.fromhex("49af42ba7f7994852d713ef2784bcbcaa7911de26adc5642cb634540e7ea5005")
SERVER_X25519_PUBLIC = bytes.fromhex("c9828876112095fe66762bdbf7c672e156d6cc253b833df1dd69b1b04e751f0f")
# Transcript-Hash(ClientHello..ServerHello):
HELLO_HASH = bytes.fromhex("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
# Transcript-Hash(ClientHello..server Finished):
SERVER_FINISHED_HASH = bytes.fromhex("9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")

# Outputs, named as ``proxy.tls.keyschedule.KeySchedule`` names them.
EXPECTED: dict[str, bytes] = {k: bytes.fromhex(v) for k, v in {
    "shared_secret": "8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d",
    "early_secret": "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a",
    "derived_for_handshake": "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba",
    "handshake_secret": "1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac",
    "client_handshake_traffic_secret": "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21",
    "server_handshake_traffic_secret": "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38",
    "derived_for_master": "43de77e0c77713859a944db9db2590b53190a65b3ee2e4f12dd7a0bb7ce254b4",
    "master_secret": "18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919",
    "client_application_traffic_secret_0": "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5",
    "server_application_traffic_secret_0": "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
    "exporter_master_secret": "fe22f881176eda18eb8f44529e6792c50c9a3f89452f68d8ae311b4309d3cf50",
    # §7.3 traffic keys of the server's handshake secret: what opens its encrypted flight.
    "server_handshake_key": "3fce516009c21727d0f2e4e86ee403bc",
    "server_handshake_iv": "5d313eb2671276ee13000b30",
}.items()}

