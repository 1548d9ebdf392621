"""Every user-visible string the server sends, in each supported language.

Strings stay ASCII: the original tutorial client decodes what it receives as ASCII, and a
single non-ASCII byte would make it drop the connection.

Lines the server itself originates (notices, errors, private messages, actions) start with
``*``. Nicknames contain neither ``*`` nor ``:`` and do not start with ``-``, so no user can
forge a server line, and a client can classify every line it receives (docs/protocol.md).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

LANGUAGES: Final = ("id", "en")

_EN: Final = {
    "joined": "{nick} joined!",
    "welcome": "Connected to the server!",
    "left": "{nick} left!",
    "action": "* {nick} {text}",
    "private_in": "*{sender}* {text}",
    "private_out": "*-> {target}* {text}",
    "who": "*** Online ({count}): {nicks}",
    "help": '*** Commands: /who, /me ACTION, /msg NICK TEXT (/msg "NICK" TEXT if it has '
    "spaces), /history [N], /quit, /help",
    "unknown_command": "*** Unknown command {command}; type /help for the list",
    "usage_me": "*** Usage: /me ACTION",
    "usage_msg": "*** Usage: /msg NICK TEXT",
    "usage_history": "*** Usage: /history [N] (N from 1 to 500)",
    "history_begin": "*** History: the last {count} events (server time)",
    "history_entry": "*** [{time}] {line}",
    "history_end": "*** End of history",
    "history_empty": "*** History: nothing yet",
    "history_off": "*** History is turned off on this server",
    "history_missed": "*** Missed at least {count} messages; they are no longer kept",
    "history_not_replayed": "*** Missed too much to show it all: {count} older events left out",
    "cap_bad_after": "*** Not a message id: {text}; sending recent history instead",
    "cap_repeated": "*** /cap may only be sent once, as the first line",
    "cap_too_late": "*** /cap must be the first line, before the nickname",
    "no_such_nick": "*** No such nickname: {nick}",
    "msg_ambiguous": "*** Not sent: that could be {nicks}; quote the nickname, e.g. /msg "
    '"{example}" TEXT',
    "line_too_long": "*** Line too long: at most {limit} bytes; it was not sent",
    "bad_utf8": "*** Invalid UTF-8; the line was not sent",
    "nick_empty": "*** Nickname rejected: it is empty",
    "nick_too_long": "*** Nickname rejected: at most {limit} characters",
    "nick_control": "*** Nickname rejected: control characters are not allowed",
    "nick_colon": "*** Nickname rejected: ':' is not allowed",
    "nick_reserved": "*** Nickname rejected: '*' is not allowed, nor a leading '-'",
    "nick_taken": "*** Nickname rejected: {nick} is already taken",
    "nick_lookalike": "*** Nickname rejected: {nick} looks the same as a nickname already here",
    "nick_invisible": "*** Nickname rejected: invisible or formatting characters are not allowed",
    "nick_punctuation": "*** Nickname rejected: ',' and '!' are not allowed (they would read "
    "as a list or a server line)",
    "nick_command": "*** Nickname rejected: it cannot start with '/' (it would read as a command)",
    "nick_utf8": "*** Nickname rejected: invalid UTF-8",
    "nick_timeout": "*** No nickname received within {seconds} seconds; closing",
    "server_full": "*** Server full ({limit} clients); try again later",
    "handshake_shed": "*** Too many connections are choosing a nickname; try again",
    "per_address": "*** Too many connections from your address (at most {limit})",
    "flood": "*** Slow down: at most {rate:g} messages a second, {burst} at once; yours are "
    "delayed, not lost",
    "shutdown": "*** Server shutting down",
    "tls_required": "*** This port speaks TLS; connect with: lanchat --tls",
    "kicked_you": "*** You were kicked by an administrator: {reason}",
    "kicked": "*** {nick} was kicked by an administrator: {reason}",
    "banned_you": "*** You are banned from this server: {reason}",
    "banned_you_until": "*** You are banned from this server until {until}: {reason}",
    "banned": "*** {nick} was banned by an administrator: {reason}",
    "notice": "*** Server notice: {text}",
    "no_reason": "no reason given",
    "cluster_unavailable": "*** The room's server is unreachable; try again in a moment",
    "cluster_not_sent": "*** Not sent: the room's server is unreachable: {text}",
    "cluster_history_reset": "*** The room's history was reset (its server lost its data); "
    "earlier messages are gone",
}

_ID: Final = {
    "joined": "{nick} Bergabung!",
    "welcome": "Terkoneksi dengan Server!",
    "left": "{nick} Keluar!",
    "action": "* {nick} {text}",
    "private_in": "*{sender}* {text}",
    "private_out": "*-> {target}* {text}",
    "who": "*** Online ({count}): {nicks}",
    "help": '*** Perintah: /who, /me AKSI, /msg NICK PESAN (/msg "NICK" PESAN jika ada '
    "spasi), /history [N], /quit, /help",
    "unknown_command": "*** Perintah tidak dikenal {command}; ketik /help untuk daftar",
    "usage_me": "*** Cara pakai: /me AKSI",
    "usage_msg": "*** Cara pakai: /msg NICK PESAN",
    "usage_history": "*** Cara pakai: /history [N] (N dari 1 sampai 500)",
    "history_begin": "*** Riwayat: {count} kejadian terakhir (waktu server)",
    "history_entry": "*** [{time}] {line}",
    "history_end": "*** Akhir riwayat",
    "history_empty": "*** Riwayat: belum ada apa-apa",
    "history_off": "*** Riwayat tidak diaktifkan di server ini",
    "history_missed": "*** Terlewat paling sedikit {count} pesan; pesan itu tidak disimpan lagi",
    "history_not_replayed": "*** Terlewat terlalu banyak: {count} kejadian lama tidak ditampilkan",
    "cap_bad_after": "*** Bukan id pesan: {text}; riwayat terbaru dikirim sebagai gantinya",
    "cap_repeated": "*** /cap hanya boleh dikirim sekali, sebagai baris pertama",
    "cap_too_late": "*** /cap harus menjadi baris pertama, sebelum nickname",
    "no_such_nick": "*** Nickname tidak ada: {nick}",
    "msg_ambiguous": "*** Tidak terkirim: bisa jadi {nicks}; pakai tanda kutip, misalnya /msg "
    '"{example}" PESAN',
    "line_too_long": "*** Baris terlalu panjang: paling banyak {limit} byte; tidak terkirim",
    "bad_utf8": "*** UTF-8 tidak valid; baris tidak terkirim",
    "nick_empty": "*** Nickname ditolak: kosong",
    "nick_too_long": "*** Nickname ditolak: paling banyak {limit} karakter",
    "nick_control": "*** Nickname ditolak: karakter kontrol tidak diizinkan",
    "nick_colon": "*** Nickname ditolak: ':' tidak diizinkan",
    "nick_reserved": "*** Nickname ditolak: '*' tidak diizinkan, begitu pula '-' di awal",
    "nick_taken": "*** Nickname ditolak: {nick} sudah dipakai",
    "nick_lookalike": "*** Nickname ditolak: {nick} terlihat sama dengan nickname yang sudah ada",
    "nick_invisible": "*** Nickname ditolak: karakter tak terlihat atau format tidak diizinkan",
    "nick_punctuation": "*** Nickname ditolak: ',' dan '!' tidak diizinkan (terbaca sebagai "
    "daftar atau baris server)",
    "nick_command": "*** Nickname ditolak: tidak boleh diawali '/' (terbaca sebagai perintah)",
    "nick_utf8": "*** Nickname ditolak: UTF-8 tidak valid",
    "nick_timeout": "*** Tidak ada nickname dalam {seconds} detik; koneksi ditutup",
    "server_full": "*** Server penuh ({limit} klien); coba lagi nanti",
    "handshake_shed": "*** Terlalu banyak koneksi yang sedang memilih nickname; coba lagi",
    "per_address": "*** Terlalu banyak koneksi dari alamat Anda (paling banyak {limit})",
    "flood": "*** Pelan-pelan: paling banyak {rate:g} pesan per detik, {burst} sekaligus; "
    "pesan Anda ditunda, tidak hilang",
    "shutdown": "*** Server dimatikan",
    "tls_required": "*** Port ini memakai TLS; sambungkan dengan: lanchat --tls",
    "kicked_you": "*** Anda dikeluarkan oleh administrator: {reason}",
    "kicked": "*** {nick} dikeluarkan oleh administrator: {reason}",
    "banned_you": "*** Anda diblokir dari server ini: {reason}",
    "banned_you_until": "*** Anda diblokir dari server ini sampai {until}: {reason}",
    "banned": "*** {nick} diblokir oleh administrator: {reason}",
    "notice": "*** Pengumuman server: {text}",
    "no_reason": "tanpa alasan",
    "cluster_unavailable": "*** Server ruang obrolan tidak terjangkau; coba lagi sebentar lagi",
    "cluster_not_sent": "*** Tidak terkirim: server ruang obrolan tidak terjangkau: {text}",
    "cluster_history_reset": "*** Riwayat ruang obrolan diatur ulang (servernya kehilangan "
    "datanya); pesan sebelumnya hilang",
}

CATALOGUES: Final = MappingProxyType({"en": MappingProxyType(_EN), "id": MappingProxyType(_ID)})


class Catalog:
    """Formats catalogue strings in one language; swapped as a whole on reload."""

    __slots__ = ("_strings",)

    def __init__(self, lang: str) -> None:
        self._strings = CATALOGUES[lang]

    def __call__(self, key: str, /, **fields: object) -> str:
        return self._strings[key].format(**fields)
