package graph

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/postgate/postgate/internal/retry"
)

// The cache lifetime of a JWKS: the provider's Cache-Control max-age (or Expires), within bounds,
// and the default when it says nothing usable (no header, no-cache, no-store, max-age=0).
const (
	defaultJWKSLifetime = 5 * time.Minute
	minJWKSLifetime     = time.Second
	maxJWKSLifetime     = 24 * time.Hour
	// DefaultUnknownKeyRefetch is the least time between two fetches of the JWKS caused by tokens
	// naming a key it does not hold: a flood of made-up kids costs the provider one fetch per
	// interval, whatever the number of gateways' clients.
	DefaultUnknownKeyRefetch = 10 * time.Second
	jwksFetchTimeout         = 10 * time.Second
	maxJWKSBytes             = 1 << 20
)

// ErrUnknownKey is returned, wrapped, for a token naming a key the JWKS does not hold.
var ErrUnknownKey = errors.New("unknown signing key")

// JWKS is an identity provider's JSON Web Key Set, fetched from its URL and cached for as long as
// the provider's cache headers say (Run refreshes it). A token naming a key the cache lacks
// causes a refetch, at most once per DefaultUnknownKeyRefetch. Keys the provider stops
// publishing are kept until the cache lifetime of the last answer that listed them ends, so that
// tokens signed just before a rotation stay valid. Only public signing keys are kept: symmetric
// ("oct") keys, private parts, and keys whose "use" is not "sig" are dropped. Safe for concurrent
// use.
type JWKS struct {
	url        string
	client     *http.Client
	log        *slog.Logger
	now        func() time.Time
	minRefetch time.Duration

	fetchMu     sync.Mutex // one fetch at a time; guards lastUnknown
	lastUnknown time.Time  // the last fetch caused by an unknown kid

	mu       sync.RWMutex // guards the fields below
	keys     map[string]jwksKey
	fetched  time.Time     // the last successful fetch
	lifetime time.Duration // its cache lifetime
	failure  error         // the last fetch's error, nil once one succeeds
	fetches  int

	store *jwkset.MemoryJWKSet
	kf    keyfunc.Keyfunc
}

// jwksKey is one cached key; until is zero while the provider lists it.
type jwksKey struct {
	jwk   jwkset.JWK
	until time.Time
}

// JWKSOption configures a JWKS.
type JWKSOption func(*JWKS)

// WithJWKSClient fetches with c (default: a client with a 10 s timeout).
func WithJWKSClient(c *http.Client) JWKSOption { return func(k *JWKS) { k.client = c } }

// WithJWKSLogger logs failed fetches and dropped keys to l.
func WithJWKSLogger(l *slog.Logger) JWKSOption { return func(k *JWKS) { k.log = l } }

// WithUnknownKeyRefetch sets the least time between refetches caused by unknown kids (default
// DefaultUnknownKeyRefetch).
func WithUnknownKeyRefetch(d time.Duration) JWKSOption { return func(k *JWKS) { k.minRefetch = d } }

// NewJWKS fetches the key set at url once. Errors: a URL that is not http(s), and a first fetch
// that fails or yields no usable key: without keys no provider token could be verified, so a
// gateway must not start as if it could.
func NewJWKS(ctx context.Context, url string, opts ...JWKSOption) (*JWKS, error) {
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return nil, fmt.Errorf("JWKS URL %q: want an http:// or https:// URL", url)
	}
	k := &JWKS{
		url:        url,
		client:     &http.Client{Timeout: jwksFetchTimeout},
		log:        slog.New(slog.DiscardHandler),
		now:        time.Now,
		minRefetch: DefaultUnknownKeyRefetch,
		keys:       map[string]jwksKey{},
		store:      jwkset.NewMemoryStorage(),
	}
	for _, o := range opts {
		o(k)
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: jwksStorage{MemoryJWKSet: k.store, k: k}})
	if err != nil {
		return nil, err
	}
	k.kf = kf
	fctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	if err := k.refresh(fctx); err != nil {
		return nil, fmt.Errorf("cannot fetch the identity provider's keys from %s: %w", url, err)
	}
	return k, nil
}

// Run refreshes the key set whenever its cache lifetime ends, retrying a failed fetch with a
// backoff of at most 30 s (or the lifetime, when shorter), until ctx ends.
func (k *JWKS) Run(ctx context.Context) error {
	wait := retry.NewBackoff(30 * time.Second)
	for {
		k.mu.RLock()
		next := k.fetched.Add(k.lifetime).Sub(k.now())
		failing := k.failure != nil
		lifetime := k.lifetime
		k.mu.RUnlock()
		if failing {
			next = min(wait.Next(), lifetime)
		}
		if !retry.Sleep(ctx, max(next, 0)) {
			return nil
		}
		fctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
		k.fetchMu.Lock()
		err := k.refresh(fctx)
		k.fetchMu.Unlock()
		cancel()
		if err == nil {
			wait.Reset()
		} else if ctx.Err() == nil {
			k.log.Warn("identity provider's JWKS not refreshed; keeping the cached keys", "url", k.url, "err", err)
		}
	}
}

// Problem returns why the cached keys can no longer be trusted to be current, "" when they can:
// the provider has been unreachable for longer than the cache lifetime of its last answer. It is
// what /readyz reports.
func (k *JWKS) Problem() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.failure == nil {
		return ""
	}
	stale := k.now().Sub(k.fetched)
	if stale <= k.lifetime {
		return ""
	}
	return fmt.Sprintf("identity provider: JWKS unreachable, keys last fetched %s ago (cache lifetime %s)",
		stale.Round(time.Second), k.lifetime)
}

// Fetches returns how many times the key set was fetched successfully.
func (k *JWKS) Fetches() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.fetches
}

// refresh fetches the key set and merges it into the cache. The caller holds fetchMu.
func (k *JWKS) refresh(ctx context.Context) error {
	keys, lifetime, err := k.fetch(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if err != nil {
		k.failure = err
		return err
	}
	merged := make(map[string]jwksKey, len(keys))
	for kid, j := range keys {
		merged[kid] = jwksKey{jwk: j}
	}
	for kid, old := range k.keys {
		if _, listed := merged[kid]; listed {
			continue
		}
		if old.until.IsZero() {
			old.until = k.fetched.Add(k.lifetime) // listed until now: kept for the last answer's lifetime
		}
		if now.Before(old.until) {
			merged[kid] = old
		}
	}
	k.keys, k.fetched, k.lifetime, k.failure = merged, now, lifetime, nil
	k.fetches++
	all := make([]jwkset.JWK, 0, len(merged))
	for _, key := range merged {
		all = append(all, key.jwk)
	}
	return k.store.KeyReplaceAll(ctx, all)
}

// fetch gets and parses the key set, with its cache lifetime.
func (k *JWKS) fetch(ctx context.Context) (map[string]jwkset.JWK, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	res, err := k.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("status %s", res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, 0, err
	}
	if len(body) > maxJWKSBytes {
		return nil, 0, fmt.Errorf("key set larger than %d bytes", maxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, 0, fmt.Errorf("not a JWK set: %w", err)
	}
	keys := map[string]jwkset.JWK{}
	for _, raw := range set.Keys {
		var meta struct {
			Kty, Use, Kid string
		}
		_ = json.Unmarshal(raw, &meta)
		if meta.Kty == string(jwkset.KtyOct) || (meta.Use != "" && meta.Use != string(jwkset.UseSig)) {
			continue // a symmetric key has no place in a public set; an encryption key signs nothing
		}
		// Without the Private option only public material is read.
		j, err := jwkset.NewJWKFromRawJSON(raw, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			k.log.Info("identity provider's key skipped", "kid", truncate(meta.Kid, 64), "err", err)
			continue
		}
		if _, dup := keys[j.Marshal().KID]; !dup {
			keys[j.Marshal().KID] = j
		}
	}
	if len(keys) == 0 {
		return nil, 0, errors.New("the key set holds no usable signing key")
	}
	return keys, cacheLifetime(res.Header, k.now()), nil
}

// cacheLifetime reads how long an answer may be cached from its headers: Cache-Control's max-age
// less Age, else Expires less Date; within [minJWKSLifetime, maxJWKSLifetime], and
// defaultJWKSLifetime when they say nothing usable.
func cacheLifetime(h http.Header, now time.Time) time.Duration {
	age := time.Duration(0)
	if a, err := strconv.Atoi(strings.TrimSpace(h.Get("Age"))); err == nil && a > 0 {
		age = time.Duration(a) * time.Second
	}
	var life time.Duration
	found := false
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return defaultJWKSLifetime
		case "max-age":
			if n, err := strconv.Atoi(strings.Trim(value, `"`)); err == nil {
				life, found = time.Duration(n)*time.Second-age, true
			}
		}
	}
	if !found {
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			date, err := http.ParseTime(h.Get("Date"))
			if err != nil {
				date = now
			}
			life, found = exp.Sub(date), true
		}
	}
	if !found || life <= 0 {
		return defaultJWKSLifetime
	}
	return min(max(life, minJWKSLifetime), maxJWKSLifetime)
}

// refetchUnknown refetches the key set for a token naming kid, unless one was fetched for an
// unknown kid less than minRefetch ago; it reports whether the set now holds kid.
func (k *JWKS) refetchUnknown(kid string) bool {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	if _, err := k.store.KeyRead(context.Background(), kid); err == nil {
		return true // a fetch made while this one waited brought it
	}
	now := k.now()
	if !k.lastUnknown.IsZero() && now.Sub(k.lastUnknown) < k.minRefetch {
		return false
	}
	k.lastUnknown = now
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	if err := k.refresh(ctx); err != nil {
		k.log.Warn("identity provider's JWKS not refetched for an unknown key", "url", k.url, "err", err)
		return false
	}
	_, err := k.store.KeyRead(ctx, kid)
	return err == nil
}

// keyfunc returns the key that verifies t: the JWKS key its kid names (keyfunc also holds the
// key's own "alg" to the token's), and only when the key is of the token's algorithm family.
func (k *JWKS) keyfunc(t *jwt.Token) (any, error) {
	key, err := k.kf.Keyfunc(t)
	if err != nil {
		if errors.Is(err, jwkset.ErrKeyNotFound) {
			return nil, ErrUnknownKey
		}
		return nil, err
	}
	alg := t.Method.Alg()
	if set, ok := key.(jwt.VerificationKeySet); ok {
		var same jwt.VerificationKeySet
		for _, key := range set.Keys {
			if ofFamily(alg, key) {
				same.Keys = append(same.Keys, key)
			}
		}
		if len(same.Keys) == 0 {
			return nil, fmt.Errorf("%w: no key for %s", ErrUnknownKey, alg)
		}
		return same, nil
	}
	if !ofFamily(alg, key) {
		return nil, fmt.Errorf("the key the token names is not a key for %s", alg)
	}
	return key, nil
}

// ofFamily reports whether key may verify alg: RSA keys RS* and PS*, EC keys ES* on the curve
// the algorithm names, Ed25519 keys EdDSA.
func ofFamily(alg string, key any) bool {
	switch key := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		bits := map[string]int{"ES256": 256, "ES384": 384, "ES512": 521}[alg]
		return bits != 0 && key.Curve.Params().BitSize == bits
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// jwksStorage is the cache as keyfunc reads it: a miss refetches the set (rate-limited).
type jwksStorage struct {
	*jwkset.MemoryJWKSet
	k *JWKS
}

// KeyRead returns the key kid names, refetching the set once when it is unknown.
func (s jwksStorage) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	if j, err := s.MemoryJWKSet.KeyRead(ctx, kid); err == nil {
		return j, nil
	}
	if !s.k.refetchUnknown(kid) {
		return jwkset.JWK{}, fmt.Errorf("%w: kid not in the identity provider's key set", jwkset.ErrKeyNotFound)
	}
	return s.MemoryJWKSet.KeyRead(ctx, kid)
}
