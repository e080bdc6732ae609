"""Sites: the one way a mechanism reaches a built host object.

A *site* routes one method of one host instance through mmvitreg. It is a small picklable object
stored in the instance's ``__dict__`` under the method's name, so Python finds it before the
class's method; it calls the class's own method (:meth:`Site.original`) or a composed version of
it. Nothing else about the host changes: its class, its parameters (names included) and its
other methods stay as they were, and mechanisms keep their state in one well-named child module
of the host (``dropkey``, ``reattention``, ``drloc_head``, ...), which the site reads.

Because a site is an ordinary object referring to its host, ``torch.save(model)`` /
``torch.load`` in a fresh process, ``copy.deepcopy`` and mmengine's EMA wrapper (a deep copy)
all keep the routing. Removing a site (:meth:`Site.remove`) restores the class's method.
"""
from typing import Any, Optional, Type, TypeVar

__all__ = ['Site', 'site_of']

S = TypeVar('S', bound='Site')


class Site:
    """Routes ``host.<method>`` through :meth:`__call__`; subclasses set :attr:`method`."""

    #: the name of the routed method (or of the host's routing attribute, see subclasses)
    method: str = ''

    def __init__(self, host: Any) -> None:
        self.host = host
        self._saved = None  # an instance attribute the site replaced (e.g. mmpretrain's slot)

    # -------------------------------------------------------------- installation
    @classmethod
    def install(cls: Type[S], host: Any, **kwargs) -> S:
        """Return the site of this kind on ``host``, creating it on first use."""
        current = host.__dict__.get(cls.method)
        if isinstance(current, cls):
            return current
        if isinstance(current, Site):
            raise TypeError(f'{type(host).__name__}.{cls.method} is already routed by '
                            f'{type(current).__name__}, not {cls.__name__}')
        site = cls(host, **kwargs)
        site._saved = current
        host.__dict__[cls.method] = site
        return site

    def remove(self) -> None:
        """Give the host its own method back."""
        if self.host.__dict__.get(self.method) is self:
            del self.host.__dict__[self.method]
            if self._saved is not None:
                self.host.__dict__[self.method] = self._saved

    # -------------------------------------------------------------- calling
    def original(self, *args, **kwargs):
        """The host's own method (instance attribute replaced by the site, else the class's)."""
        if self._saved is not None:
            return self._saved(*args, **kwargs)
        return getattr(type(self.host), self.method)(self.host, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self.original(*args, **kwargs)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({type(self.host).__name__}.{self.method})'


def site_of(host: Any, cls: Type[S]) -> Optional[S]:
    """The site of kind ``cls`` installed on ``host``, or None."""
    current = getattr(host, '__dict__', {}).get(cls.method)
    return current if isinstance(current, cls) else None
