"""The client's own words, in the user's language: English or Indonesian.

The server speaks its own configured language; these are the lines ``lanchat`` itself
writes (prompts, connection notices, errors), so that a screen does not mix two languages
for an Indonesian user. The language comes from the locale environment the way gettext reads
it: ``LC_ALL``, else ``LC_MESSAGES``, else ``LANG``; ``LANGUAGE`` (a list of preferences)
counts unless that locale is C. English is the default.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

_EN: Final = {
    "error": "lanchat: error: {text}",
    "warning": "lanchat: warning: {text}",
    "note": "lanchat: {text}",
    "internal_error": "internal error: {error}",
    "debug_hint": "(LANCHAT_DEBUG=1 shows details)",
    "username": "Username: ",
    "connected": "connected to {where} as {nick}{security}",
    "unverified": "server NOT verified",
    "how_to_leave": "/help lists the commands; /quit, Ctrl-D or Ctrl-C leaves",
    "not_sent": "NOT sent: {line}",
    "maybe_lost": "may not have been delivered: {line}",
    "held": "not connected; will be sent after reconnecting: {line}",
    "too_many_held": "NOT sent ({count} messages already waiting): {line}",
    "cannot_connect": "cannot connect to {where}: {reason}",
    "timed_out": "timed out",
    "no_address": "no address to connect to",
    "closed_before_join": "{where} closed the connection before letting us in",
    "connection_failed": "connection to {where} failed: {reason}",
    "tls_only": "{where} only takes TLS connections: {line}",
    "refused_connection": "{where} refused the connection: {line}",
    "not_lanchat": "{where} does not speak the lanchat protocol",
    "no_tls": "the server does not speak TLS (try without --tls)",
    "tls_failed": "TLS handshake failed: {reason}",
    "server_closed": "the server closed the connection",
    "untrusted": "TLS certificate verification failed: {detail} ({hint})",
    "hint_name": "connect to a name or address the certificate was issued for",
    "hint_cafile": "for a private CA or a self-signed certificate, pass it with --cafile",
    "nick_empty": "the nickname is empty",
    "nick_control": "a nickname cannot contain control characters",
    "nick_command": "a nickname cannot start with '/' (it would read as a command)",
    "nick_refused": "the server refused the nickname {nick}: {reason}",
    "removed": "removed from the room by the server; not reconnecting",
    "lost": "connection to {where} lost; reconnecting",
    "no_answer": "no answer from {where} for {seconds} s",
    "gave_up": "could not reconnect to {where} within {seconds} s",
    "final": "{reason}; not reconnecting",
    "still_disconnected": "still disconnected ({reason}); next try in {seconds} s",
    "reconnected": "reconnected to {where} as {nick}",
    "history_mark": "[{time} history]",
    "history_end": "--- end of history; live from here ---",
    "messages_one": "{count} message",
    "messages_many": "{count} messages",
    "resent": "sent again {messages} whose delivery was not confirmed before the connection "
    "was lost",
    "sent_held": "sent {messages} typed while disconnected",
    "connection_lost": "connection lost",
    "not_all_delivered": "{why}; not all input was delivered",
    "nick_required": "--nick is required when input or output is not a terminal",
    "bad_address": "{text!r} is not an address like [::1] or [::1]:5001",
    "no_host": "{text!r} has no host before the port",
    "bad_port": "{text!r}: the port must be a number from 1 to 65535",
    "two_ports": "two ports: {given} in HOST and {port} from --port",
    "needs_tls": "{option} only applies with --tls",
    "cafile_or_insecure": "--cafile and --insecure cannot be used together",
    "insecure": "--insecure: the connection is encrypted but the server is not "
    "authenticated (its certificate is not checked)",
    "no_pem": "no PEM certificate in {path}",
    "cannot_use": "cannot use {path}: {reason}",
    "cannot_read": "cannot read {path}: {reason}",
    "needs_list": "--json only applies with --list",
    "no_zeroconf": "finding servers needs python-zeroconf (Debian: python3-zeroconf)",
    "no_mdns": "cannot look for servers on the network (mDNS): {reason}",
    "found_none": "no lanchat server answered on the local network; give its address: "
    "lanchat HOST (for example lanchat 192.168.1.2)",
    "found_one": "found {name} at {where}",
    "found_several": "{count} lanchat servers on the local network:",
    "choose": "Connect to which one (1-{count})?",
    "give_one": "several lanchat servers answered; give one's address: lanchat HOST",
    "list_none": "no lanchat server answered on the local network",
    "list_head": "NAME\tADDRESSES\tPORT\tTLS\tWEB",
    "yes": "yes",
    "no": "no",
}

_ID: Final = {
    "error": "lanchat: galat: {text}",
    "warning": "lanchat: peringatan: {text}",
    "note": "lanchat: {text}",
    "internal_error": "galat internal: {error}",
    "debug_hint": "(LANCHAT_DEBUG=1 menampilkan rinciannya)",
    "username": "Nama pengguna: ",
    "connected": "terhubung ke {where} sebagai {nick}{security}",
    "unverified": "server TIDAK terverifikasi",
    "how_to_leave": "/help menampilkan daftar perintah; /quit, Ctrl-D atau Ctrl-C untuk keluar",
    "not_sent": "TIDAK terkirim: {line}",
    "maybe_lost": "mungkin tidak tersampaikan: {line}",
    "held": "tidak terhubung; akan dikirim setelah tersambung kembali: {line}",
    "too_many_held": "TIDAK terkirim ({count} pesan sudah menunggu): {line}",
    "cannot_connect": "tidak dapat terhubung ke {where}: {reason}",
    "timed_out": "waktu habis",
    "no_address": "tidak ada alamat untuk dihubungi",
    "closed_before_join": "{where} menutup koneksi sebelum kita masuk",
    "connection_failed": "koneksi ke {where} gagal: {reason}",
    "tls_only": "{where} hanya menerima koneksi TLS: {line}",
    "refused_connection": "{where} menolak koneksi: {line}",
    "not_lanchat": "{where} tidak memakai protokol lanchat",
    "no_tls": "server tidak memakai TLS (coba tanpa --tls)",
    "tls_failed": "jabat tangan TLS gagal: {reason}",
    "server_closed": "server menutup koneksi",
    "untrusted": "verifikasi sertifikat TLS gagal: {detail} ({hint})",
    "hint_name": "hubungkan ke nama atau alamat yang tercantum di sertifikat",
    "hint_cafile": "untuk CA pribadi atau sertifikat self-signed, berikan dengan --cafile",
    "nick_empty": "nickname kosong",
    "nick_control": "nickname tidak boleh berisi karakter kontrol",
    "nick_command": "nickname tidak boleh diawali '/' (terbaca sebagai perintah)",
    "nick_refused": "server menolak nickname {nick}: {reason}",
    "removed": "dikeluarkan dari room oleh server; tidak menyambung kembali",
    "lost": "koneksi ke {where} terputus; menyambung kembali",
    "no_answer": "tidak ada jawaban dari {where} selama {seconds} detik",
    "gave_up": "tidak dapat tersambung kembali ke {where} dalam {seconds} detik",
    "final": "{reason}; tidak menyambung kembali",
    "still_disconnected": "masih terputus ({reason}); dicoba lagi dalam {seconds} detik",
    "reconnected": "tersambung kembali ke {where} sebagai {nick}",
    "history_mark": "[{time} riwayat]",
    "history_end": "--- akhir riwayat; langsung dari sini ---",
    "messages_one": "{count} pesan",
    "messages_many": "{count} pesan",
    "resent": "{messages} yang belum pasti tersampaikan sebelum koneksi terputus dikirim lagi",
    "sent_held": "{messages} yang diketik saat terputus sudah dikirim",
    "connection_lost": "koneksi terputus",
    "not_all_delivered": "{why}; tidak semua masukan tersampaikan",
    "nick_required": "--nick wajib diberikan jika masukan atau keluaran bukan terminal",
    "bad_address": "{text!r} bukan alamat seperti [::1] atau [::1]:5001",
    "no_host": "{text!r} tidak punya host sebelum port",
    "bad_port": "{text!r}: port harus angka dari 1 sampai 65535",
    "two_ports": "dua port: {given} di HOST dan {port} dari --port",
    "needs_tls": "{option} hanya berlaku dengan --tls",
    "cafile_or_insecure": "--cafile dan --insecure tidak bisa dipakai bersamaan",
    "insecure": "--insecure: koneksi terenkripsi tetapi server tidak diautentikasi "
    "(sertifikatnya tidak diperiksa)",
    "no_pem": "tidak ada sertifikat PEM di {path}",
    "cannot_use": "tidak dapat memakai {path}: {reason}",
    "cannot_read": "tidak dapat membaca {path}: {reason}",
    "needs_list": "--json hanya berlaku dengan --list",
    "no_zeroconf": "mencari server memerlukan python-zeroconf (Debian: python3-zeroconf)",
    "no_mdns": "tidak dapat mencari server di jaringan (mDNS): {reason}",
    "found_none": "tidak ada server lanchat yang menjawab di jaringan lokal; berikan alamatnya: "
    "lanchat HOST (misalnya lanchat 192.168.1.2)",
    "found_one": "menemukan {name} di {where}",
    "found_several": "{count} server lanchat di jaringan lokal:",
    "choose": "Hubungkan ke yang mana (1-{count})?",
    "give_one": "beberapa server lanchat menjawab; berikan alamat salah satunya: lanchat HOST",
    "list_none": "tidak ada server lanchat yang menjawab di jaringan lokal",
    "list_head": "NAMA\tALAMAT\tPORT\tTLS\tWEB",
    "yes": "ya",
    "no": "tidak",
}

CATALOGUES: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {"en": MappingProxyType(_EN), "id": MappingProxyType(_ID)}
)


def language(env: Mapping[str, str] | None = None) -> str:
    """``id`` or ``en``, from the locale environment (``en`` when nothing says otherwise)."""
    env = os.environ if env is None else env
    locale = env.get("LC_ALL") or env.get("LC_MESSAGES") or env.get("LANG") or ""
    code = _code(locale)
    preferences = [] if code in ("", "c", "posix") else env.get("LANGUAGE", "").split(":")
    for choice in (*map(_code, preferences), code):
        if choice in CATALOGUES:
            return choice
    return "en"


def _code(locale: str) -> str:
    """``id_ID.UTF-8`` -> ``id``."""
    return re.split(r"[_.@]", locale, maxsplit=1)[0].lower()


@functools.cache
def _catalogue() -> Mapping[str, str]:
    return CATALOGUES[language()]


def say(key: str, **fields: object) -> str:
    """One of the client's lines, in the user's language."""
    return _catalogue()[key].format(**fields)


def messages(count: int) -> str:
    """``1 message``, ``3 messages`` (``3 pesan``)."""
    return say("messages_one" if count == 1 else "messages_many", count=count)
