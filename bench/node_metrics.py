"""A Rookery node's Prometheus histograms, read from its admin listener: the one scrape the
bench scripts share (`soak.py`, `run.py`, `ack_timeline.py`)."""
import urllib.request

INF = float("inf")


def histograms(admin_url, token, names, timeout=5):
    """{name: {upper bound in seconds (INF for +Inf): cumulative count}} for each unlabelled
    histogram in `names`, from one scrape of `admin_url`/metrics."""
    req = urllib.request.Request(admin_url.rstrip("/") + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read().decode()
    out = {name: {} for name in names}
    for line in text.splitlines():
        name, found, rest = line.partition('_bucket{le="')
        if found and name in out:
            le, _, value = rest.partition('"} ')
            out[name][INF if le == "+Inf" else float(le)] = int(float(value))
    return out


def count(buckets, before=None):
    """Observations of a histogram reading, since `before` when given (an earlier reading)."""
    return buckets.get(INF, 0) - (before or {}).get(INF, 0)


def over(buckets, seconds, before=None):
    """Observations above `seconds` (one of the histogram's bounds), since `before` when given."""
    return count(buckets, before) - (buckets.get(seconds, 0) - (before or {}).get(seconds, 0))


def quantile(buckets, q, before=None):
    """The upper bucket bound at or under which a fraction `q` of the observations (since
    `before`, an earlier reading, when given) fell; INF when only the +Inf bucket holds them."""
    n = count(buckets, before)
    for le in sorted(buckets):
        if n and buckets[le] - (before or {}).get(le, 0) >= q * n:
            return le
    return INF
