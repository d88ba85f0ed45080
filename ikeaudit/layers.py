"""Teach Scapy's own IKEv2 layers what the post-quantum transition added.

`scapy.contrib.ikev2` predates RFC 9370 and the ML-KEM draft: it shows ADDKE
transforms as "6=36", exchange 44 as a bare number, and names notifies 16435.. with
an "IV2_NOTIFY_" prefix. We extend its field tables in place from `ikeaudit.iana`
instead of writing a parallel parser. Importing this module is enough; it is
idempotent.

Scapy's enum fields copy their dict when the class is defined, so updating the
module-level dicts alone would change nothing: each field's own tables are
updated here.
"""

from __future__ import annotations

import sys

from scapy.config import conf as _conf

# ikeaudit dissects and never sends: Scapy's routing tables, which scapy.route and
# scapy.route6 read from the kernel when first imported (a good part of Scapy's import
# time), stay empty unless something imported them already; so import Scapy's layers
# through this module. Code of the same process that sends with Scapy can fill them:
# conf.route.resync(), conf.route6.resync().
if "scapy.route" not in sys.modules and "scapy.route6" not in sys.modules:
    _conf.route_autoload = _conf.route6_autoload = False

from scapy.contrib import ikev2 as _scapy_ikev2  # noqa: E402
from scapy.layers.isakmp import ISAKMP  # noqa: E402, F401 - IKEv1, for dissect

from ikeaudit import iana  # noqa: E402

IKEv2 = _scapy_ikev2.IKEv2
IKEv2_Payload = _scapy_ikev2.IKEv2_Payload
IKEv2_SA = _scapy_ikev2.IKEv2_SA
IKEv2_Proposal = _scapy_ikev2.IKEv2_Proposal
IKEv2_Transform = _scapy_ikev2.IKEv2_Transform
IKEv2_KE = _scapy_ikev2.IKEv2_KE
IKEv2_Notify = _scapy_ikev2.IKEv2_Notify
IKEv2_VendorID = _scapy_ikev2.IKEv2_VendorID
IKEv2_Encrypted = _scapy_ikev2.IKEv2_Encrypted
IKEv2_Encrypted_Fragment = _scapy_ikev2.IKEv2_Encrypted_Fragment
IKEv2_IDi = _scapy_ikev2.IKEv2_IDi
IKEv2_IDr = _scapy_ikev2.IKEv2_IDr
IKEv2_AUTH = _scapy_ikev2.IKEv2_AUTH
IKEv2_CERT = _scapy_ikev2.IKEv2_CERT
IKEv2_CERTREQ = _scapy_ikev2.IKEv2_CERTREQ


def _field(cls, name: str):
    for f in cls.fields_desc:
        if f.name == name:
            return getattr(f, "fld", f)  # ConditionalField wraps the real field
    raise LookupError(f"{cls.__name__} has no field {name}")


def _extend_enum(field, names: dict[int, str]) -> None:
    for value, name in names.items():
        old = field.i2s.get(value)
        if old is not None and field.s2i.get(old) == value:
            del field.s2i[old]
        field.i2s[value] = name
        field.s2i[name] = value


def _extend_multi_enum(field, transform_type: int, names: dict[int, str]) -> None:
    i2s = field.i2s_multi.setdefault(transform_type, {})
    s2i = field.s2i_multi.setdefault(transform_type, {})
    for value, name in names.items():
        i2s[value] = name
        s2i[name] = value
        field.s2i_all[name] = value


def _ke_method_names() -> dict[int, str]:
    return {m.id: m.name for m in iana.KE_METHODS.values()}


def register() -> None:
    ke_names = _ke_method_names()
    _extend_enum(_field(IKEv2, "exch_type"), iana.EXCHANGE_TYPES)
    _extend_enum(_field(IKEv2_Transform, "transform_type"), iana.TRANSFORM_TYPES)
    _extend_enum(_field(IKEv2_Notify, "type"), iana.NOTIFY_TYPES)
    _extend_enum(_field(IKEv2_KE, "group"), ke_names)

    transform_id = _field(IKEv2_Transform, "transform_id")
    per_type = {
        iana.TRANSFORM_ENCR: iana.ENCRYPTION_ALGORITHMS,
        iana.TRANSFORM_PRF: iana.PRF_ALGORITHMS,
        iana.TRANSFORM_INTEG: iana.INTEGRITY_ALGORITHMS,
        iana.TRANSFORM_ESN: iana.ESN_VALUES,
        **{t: ke_names for t in iana.KE_TRANSFORM_TYPES},
    }
    for transform_type, names in per_type.items():
        _extend_multi_enum(transform_id, transform_type, names)

    # Keep Scapy's module tables truthful for anyone who reads them directly.
    _scapy_ikev2.IKEv2ExchangeTypes.update(iana.EXCHANGE_TYPES)
    _scapy_ikev2.IKEv2NotifyMessageTypes.update(iana.NOTIFY_TYPES)
    _scapy_ikev2.IKEv2TransformTypes.update(iana.TRANSFORM_TYPES)
    for transform_type, names in per_type.items():
        _scapy_ikev2.IKEv2TransformAlgorithms.setdefault(transform_type, {}).update(names)


register()
