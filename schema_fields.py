"""Field types the schemas share: trimmed text without control characters, lower-cased
email addresses, strict booleans, and regular expressions that match the whole value."""

import re

from marshmallow import ValidationError, fields, validate

# tab, newline and carriage return are the only control characters text may carry
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
LINE_BREAKS = re.compile(r"[\t\n\r]")
# what Text trims from both ends: the whitespace of ASCII, nothing Unicode-specific, so the
# documented pattern below reads the same in every regular-expression dialect
SURROUNDING_SPACE = " \t\n\r"


def text_pattern(multiline, required):
    """The OpenAPI `pattern` of what Text accepts, written as Text checks it.

    Surrounding space is trimmed; what remains carries no control character (a multiline
    text may hold tabs and line breaks) and, when required, is not empty.
    """
    banned = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f" if multiline else r"\x00-\x1f\x7f"
    inner = rf"[^ \t\n\r{banned}](?:[^{banned}]*[^ \t\n\r{banned}])?"
    return rf"^[ \t\n\r]*{inner if required else f'(?:{inner})?'}[ \t\n\r]*$"


class Text(fields.String):
    """A string that is trimmed and refuses control characters (PostgreSQL rejects NUL).

    The OpenAPI document carries the same rule as a `pattern`, and the length limit applies
    to the text as sent as well as trimmed, so that the document says what is accepted.
    """

    def __init__(self, *args, multiline=False, **kwargs):
        self.multiline = multiline
        super().__init__(*args, **kwargs)
        lengths = [v for v in self.validators if isinstance(v, validate.Length)]
        required = any(length.min for length in lengths)
        self.metadata = {"pattern": text_pattern(multiline, required), **self.metadata}
        # documented lengths count the text as sent; trimming must not let longer text in
        self.sent_max = min((length.max for length in lengths if length.max), default=None)

    def _deserialize(self, value, attr, data, **kwargs):
        sent = super()._deserialize(value, attr, data, **kwargs)
        if self.sent_max is not None and len(sent) > self.sent_max:
            raise ValidationError(f"Longer than maximum length {self.sent_max}.")
        text = sent.strip(SURROUNDING_SPACE)
        if CONTROL_CHARACTERS.search(text) or (not self.multiline and LINE_BREAKS.search(text)):
            raise ValidationError("Must not contain control characters.")
        return text


class FullMatch(validate.Regexp):
    """A Regexp the whole value must match: in Python `$` also matches before a final newline."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def printable(text):
    """Refuse text with control characters, line breaks included."""
    if CONTROL_CHARACTERS.search(text) or LINE_BREAKS.search(text):
        raise ValidationError("Must not contain control characters.")


EMAIL_MAX_LENGTH = 254


class Email(fields.Email):
    """An email address, stored lower-cased; the limits hold for what is stored.

    Lower-casing can lengthen a string ('İ' becomes two characters), so the length is
    checked after it, where a longer value would not fit the column.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        email = super()._deserialize(value, attr, data, **kwargs).lower()
        if len(email) > EMAIL_MAX_LENGTH:
            raise ValidationError(f"Longer than {EMAIL_MAX_LENGTH} characters once lower-cased.")
        # an email's quoted local part may hold control characters; no mail server wants them
        printable(email)
        return email


class StrictBool(fields.Boolean):
    """JSON true or false only: "yes", 1 or "false" would be a guess at what was meant."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value
