"""Salted pseudonyms for patient ids: HMAC-SHA256 of the id under a secret salt.

The same id and salt always give the same pseudonym (so a later export of the same
patients joins up), and without the salt the id cannot be recovered by hashing guessed
ids. The key table (pseudonym -> original id) is written only where the user asks.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "P"
HEX_DIGITS = 12  # 48 bits: collisions are negligible below millions of patients


def pseudonym(patient_id: str, salt: str) -> str:
    """``P`` + the first 12 hex digits of HMAC-SHA256(salt, patient_id)."""
    digest = hmac.new(salt.encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256)
    return PREFIX + digest.hexdigest()[:HEX_DIGITS]
