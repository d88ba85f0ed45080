"""`--keys FILE`, shared by scan, mtu, report and live: Wireshark key tables to decrypt with."""

from __future__ import annotations

import click

from ikeaudit.decrypt import KeyTable, KeyTableError, parse_key_table


def keys_option(func):
    return click.option(
        "--keys", "key_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
        help="Wireshark ikev2_decryption_table (strongSwan's save-keys writes it) to decrypt "
             "IKE_INTERMEDIATE, IKE_AUTH, CREATE_CHILD_SA and IKE_FOLLOWUP_KE with; repeat for "
             "several. A CAPTURE.keys beside a capture is not read unless named here.")(func)


def load_keys(files: tuple[str, ...]) -> KeyTable | None:
    """The key tables named by --keys, merged; None when there are none. A file that
    cannot be read or used is a usage error (exit 2), never a traceback."""
    if not files:
        return None
    table = KeyTable()
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"{path}: {getattr(exc, 'strerror', None) or exc}",
                                     param_hint="--keys") from None
        try:
            table = table.merged(parse_key_table(text, path))
        except KeyTableError as exc:
            raise click.BadParameter(str(exc), param_hint="--keys") from None
    return table
