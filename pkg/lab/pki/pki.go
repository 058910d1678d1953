// Package pki issues the certificates and keys of kdiag's lab control plane:
// a certificate authority, serving and client certificates signed by it,
// and the service-account signing key pair.
//
// The CA comes from client-go's util/cert and keys are encoded with
// util/keyutil. client-go has no helper that signs a leaf certificate with a
// CA (kubeadm's is not importable without pulling in kubeadm), so Issue
// fills an x509 template itself. Keys are ECDSA P-256: Kubernetes accepts
// them everywhere the lab needs keys, and they are generated in microseconds.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// CA is a certificate authority that can sign certificates.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key is the CA private key.
	Key crypto.Signer
}

// NewCA creates a self-signed CA valid for ten years.
func NewCA(commonName string) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	c, err := cert.NewSelfSignedCACert(cert.Config{CommonName: commonName, NotBefore: time.Now().Add(-time.Hour)}, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return &CA{Cert: c, Key: key}, nil
}

// LoadCA reads a CA certificate and its key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certs, err := cert.CertsFromFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyAny, err := keyutil.PrivateKeyFromFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	key, ok := keyAny.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s cannot sign", keyFile)
	}
	return &CA{Cert: certs[0], Key: key}, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// KeyPEM returns the CA key in PEM form.
func (ca *CA) KeyPEM() ([]byte, error) { return keyutil.MarshalPrivateKeyToPEM(ca.Key) }

// Request describes a certificate to issue.
type Request struct {
	// CommonName is the subject CN: the user name for client certificates.
	CommonName string
	// Organizations is the subject O: the groups for client certificates.
	Organizations []string
	// DNSNames and IPs are the subject alternative names of a serving
	// certificate.
	DNSNames []string
	IPs      []net.IP
	// Client and Server select the extended key usages.
	Client, Server bool
	// NotBefore defaults to one hour ago (or one hour before NotAfter when
	// that is earlier, so that expired certificates can be made).
	NotBefore time.Time
	// NotAfter defaults to one year from now.
	NotAfter time.Time
}

// Pair is an issued certificate with its key, both also PEM-encoded.
type Pair struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Issue signs a new certificate with a fresh key.
func (ca *CA) Issue(req Request) (*Pair, error) {
	if req.CommonName == "" {
		return nil, errors.New("issue certificate: empty common name")
	}
	if !req.Client && !req.Server {
		return nil, fmt.Errorf("issue certificate %q: neither client nor server usage requested", req.CommonName)
	}
	now := time.Now()
	notAfter := req.NotAfter
	if notAfter.IsZero() {
		notAfter = now.Add(365 * 24 * time.Hour)
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
		if lim := notAfter.Add(-time.Hour); lim.Before(notBefore) {
			notBefore = lim
		}
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("issue certificate %q: NotAfter %s is not after NotBefore %s", req.CommonName, notAfter, notBefore)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt64))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: req.Organizations},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
		NotBefore:    notBefore.UTC(),
		NotAfter:     notAfter.UTC(),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if req.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if req.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", req.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate %q: %w", req.CommonName, err)
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, fmt.Errorf("encode key of %q: %w", req.CommonName, err)
	}
	return &Pair{Cert: c, CertPEM: encodeCert(c), KeyPEM: keyPEM}, nil
}

// KeyPair is a bare key pair in PEM form, such as the service-account
// token signing key.
type KeyPair struct {
	PrivatePEM []byte
	PublicPEM  []byte
}

// NewServiceAccountKey creates the key pair kube-apiserver uses to sign and
// verify service-account tokens.
func NewServiceAccountKey() (*KeyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	priv, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, fmt.Errorf("encode service-account key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("encode service-account public key: %w", err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: keyutil.PublicKeyBlockType, Bytes: der})
	return &KeyPair{PrivatePEM: priv, PublicPEM: pub}, nil
}

// WriteFiles writes a certificate and key as <dir>/<name>.crt and
// <dir>/<name>.key, the key readable by its owner only.
func WriteFiles(dir, name string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if certPEM != nil {
		if err := os.WriteFile(filepath.Join(dir, name+".crt"), certPEM, 0o644); err != nil {
			return fmt.Errorf("write %s certificate: %w", name, err)
		}
	}
	if keyPEM != nil {
		if err := os.WriteFile(filepath.Join(dir, name+".key"), keyPEM, 0o600); err != nil {
			return fmt.Errorf("write %s key: %w", name, err)
		}
	}
	return nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func encodeCert(c *x509.Certificate) []byte {
	// EncodeCertificates only fails on a nil certificate.
	out, _ := cert.EncodeCertificates(c)
	return out
}
