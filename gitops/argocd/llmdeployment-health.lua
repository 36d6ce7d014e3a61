-- Argo CD health of an llmdeploy.io/LLMDeployment (argocd-cm key
-- resource.customizations.health.llmdeploy.io_LLMDeployment; docs/gitops.md).
-- Trusts the status only once the operator has observed this generation.
local hs = {status = "Progressing", message = "Waiting for the operator to observe this generation"}
if obj.status == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local function holds(type, status)
  local condition = conditions[type]
  return condition ~= nil and condition.status == status
    and (condition.observedGeneration == nil or condition.observedGeneration == obj.metadata.generation)
end
local function say(status, type)
  hs.status = status
  if conditions[type] ~= nil and conditions[type].message ~= nil then
    hs.message = conditions[type].message
  else
    hs.message = "phase " .. tostring(obj.status.phase)
  end
  return hs
end
-- Cannot be planned (invalid spec, no feasible plan): no retry without a change.
if holds("Stalled", "True") or obj.status.phase == "Failed" then
  return say("Degraded", "Stalled")
end
-- Applying the children failed.
if holds("Degraded", "True") then
  return say("Degraded", "Degraded")
end
-- Replicas waited for GPUs past spec.placement.pendingTimeout.
if holds("CapacityAvailable", "False") then
  return say("Degraded", "CapacityAvailable")
end
if holds("Ready", "True") then
  if obj.status.replicas == 0 then
    hs.status = "Suspended"
    hs.message = "Scaled to zero replicas"
    return hs
  end
  return say("Healthy", "Ready")
end
return say("Progressing", "Ready")
