"""YAML for configs, bounded: one document parsed with PyYAML's SafeLoader, refusing aliases and deep nesting
as it composes, so that a hostile config costs at most its own size before its one line. No TensorFlow.
"""

import yaml

from alexnet_tf.errors import ConfigError
from alexnet_tf.user_files import LIMITS

# A config is a few kilobytes of sections, keys and short lists; these bounds keep a hostile one (a
# YAML alias bomb expands a few hundred bytes into gigabytes) from costing memory before its one line.
MAX_CONFIG_BYTES = LIMITS["config"].limit  # user_files.LIMITS: 1,000,000 bytes
MAX_YAML_DEPTH = 20


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses aliases and nesting deeper than MAX_YAML_DEPTH, as it composes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"{self.source}: a YAML alias (*{event.anchor}) at line {event.start_mark.line + 1}; "
                              "expected plain values (aliases are refused: a few bytes of them can expand to gigabytes)")
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{self.source}: YAML nested deeper than {MAX_YAML_DEPTH} levels at line "
                              f"{self.peek_event().start_mark.line + 1}; expected sections, keys and flat lists")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse(text, source):
    """One YAML document, through _BoundedLoader; `source` names it in errors."""
    loader = _BoundedLoader(text)
    loader.source, loader.depth = source, 0
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
