{{/* Names, labels, and the checks that stop a rendering that cannot work. */}}

{{- define "failsoft.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "failsoft.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "failsoft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "failsoft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "failsoft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "failsoft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "failsoft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "failsoft.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "failsoft.portfolioConfigMap" -}}
{{- default (printf "%s-portfolio" (include "failsoft.fullname" .)) .Values.existingPortfolioConfigMap -}}
{{- end -}}

{{/* More than one replica, now or by the autoscaler. */}}
{{- define "failsoft.many" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{- define "failsoft.checks" -}}
{{- if eq .Values.store.kind "sqlite" -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail (printf "store.kind is sqlite, which holds one replica's state; replicaCount is %d. Set replicaCount: 1, or store.kind: postgres with store.postgres.existingSecret." (int .Values.replicaCount)) -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "store.kind is sqlite, which holds one replica's state; autoscaling.enabled would add replicas. Set autoscaling.enabled: false, or store.kind: postgres." -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.store.kind "postgres") (not .Values.store.postgres.existingSecret) -}}
{{- fail "store.kind is postgres: set store.postgres.existingSecret to a Secret holding the URL (key store.postgres.key, default url)." -}}
{{- end -}}
{{- $need := add .Values.preStopSeconds .Values.drainSeconds .Values.logFlushSeconds -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $need) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) is shorter than preStopSeconds + drainSeconds + logFlushSeconds (%d): the kubelet would kill the pod before its prediction log is flushed. Raise it to at least %d." (int .Values.terminationGracePeriodSeconds) (int $need) (int $need)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is more than autoscaling.maxReplicas (%d)." (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (include "failsoft.many" .) -}}
{{- $least := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled -}}
{{- if ge (int .Values.podDisruptionBudget.minAvailable) (int $least) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be below the replica count (%d), or no node could ever be drained." (int .Values.podDisruptionBudget.minAvailable) (int $least)) -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.portfolio) (not .Values.existingPortfolioConfigMap) -}}
{{- fail "set portfolio (portfolio.toml's text) or existingPortfolioConfigMap." -}}
{{- end -}}
{{- end -}}
